import sys

from mupbench.cli import main

sys.exit(main())
