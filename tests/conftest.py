import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """A small byte-level corpus (Python sources) large enough for the train/validation split, fast to prepare."""
    import sysconfig

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for p in sorted(root.glob("*.py")):
        data = p.read_bytes()
        chunks.append(data)
        size += len(data)
        if size > 700_000:
            break
    path.write_bytes(b"".join(chunks))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600):
    """Run `python -m mupbench.cli ...` in a subprocess and return the CompletedProcess."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mupbench.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
