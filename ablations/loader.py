"""Loading user-defined ablations: from a Python file, an importable module, or the `mupbench.ablations` entry point."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from mupbench.errors import UserError

ENTRY_POINT_GROUP = "mupbench.ablations"


def _load(target: str) -> None:
    path = Path(target)
    try:
        if target.endswith(".py") or path.exists():
            if not path.is_file():
                raise UserError(f"ablations file {target} does not exist: pass a .py file or an importable module")
            name = f"mupbench_user_ablations_{abs(hash(str(path.resolve())))}"
            if name in sys.modules:
                return
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(target)
    except UserError:
        raise
    except ModuleNotFoundError as e:
        raise UserError(f"cannot import ablations module {target!r} ({e}): pass a .py path or fix PYTHONPATH") from None
    except (Exception, SystemExit) as e:  # a user's file failing to import (or exiting) is a user error, on one line
        raise UserError(f"loading ablations from {target} failed: {type(e).__name__}: {e}") from None


def load_user_ablations(targets: list[str] = ()) -> None:
    """Import every entry-point module, then each target; their @ablation decorators register on import."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except (Exception, SystemExit) as e:
            raise UserError(f"ablations entry point {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
    for target in targets:
        _load(target)
