"""What a run ran on besides its spec: library versions and the project's revision, recorded with every result."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

def environment() -> dict:
    """Library versions and the project revision, recorded with every run."""
    import platform

    versions = {"python": platform.python_version()}
    for dist in ("mupbench", "torch", "triton", "numpy", "lion-pytorch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"versions": versions, "git_rev": git_revision()}


def git_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip()[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
