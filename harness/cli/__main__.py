from mupbench.cli import entry

entry()
