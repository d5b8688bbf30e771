"""Which implementation `kernels.rms_norm` / `kernels.attention` pick, and the errors when the choice cannot run."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mupbench import kernels
from mupbench.kernels import reference

ROOT = Path(__file__).resolve().parents[1]
has_triton = importlib.util.find_spec("triton") is not None
interpreting = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")


@pytest.fixture(autouse=True)
def _auto(monkeypatch):
    monkeypatch.delenv("MUPBENCH_KERNELS", raising=False)
    kernels.reset_record()  # backend() reports what earlier calls ran; these tests check what the next would try
    yield
    kernels.reset_record()


def test_auto_picks_triton_only_for_cuda_with_triton(monkeypatch):
    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    assert kernels.backend("cpu") == "torch"
    assert kernels.backend(torch.device("cuda", 0)) == "triton"
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    assert kernels.backend("cuda") == "torch"


@pytest.mark.parametrize("value, expected", [("torch", "torch"), ("TRITON", "triton"), (" auto ", "torch")])
def test_environment_forces_a_backend(monkeypatch, value, expected):
    monkeypatch.setenv("MUPBENCH_KERNELS", value)
    assert kernels.backend("cpu") == expected


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("MUPBENCH_KERNELS", "cuda")
    with pytest.raises(ValueError, match="MUPBENCH_KERNELS='cuda' is not one of auto, torch, triton"):
        kernels.rms_norm(torch.ones(2, 3))


def test_cpu_runs_the_reference():
    x = torch.randn(2, 5, 24)
    w = torch.rand(24) + 0.5
    assert torch.equal(kernels.rms_norm(x, w, 1e-5), reference.rms_norm(x, w, 1e-5))
    q, k, v = torch.randn(1, 4, 9, 16), torch.randn(1, 2, 9, 16), torch.randn(1, 2, 9, 16)
    assert torch.equal(kernels.attention(q, k, v, 0.25, causal=False), reference.attention(q, k, v, 0.25, causal=False))


def test_forced_triton_without_triton_says_so(monkeypatch):
    monkeypatch.setenv("MUPBENCH_KERNELS", "triton")
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="Triton cannot be imported here.*MUPBENCH_KERNELS=torch"):
        kernels.rms_norm(torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="Triton cannot be imported here"):
        kernels.attention(*(torch.ones(1, 1, 2, 16) for _ in range(3)), 0.25)


@pytest.mark.skipif(not has_triton or interpreting, reason="needs Triton, without TRITON_INTERPRET")
def test_forced_triton_on_cpu_tensors_points_at_the_interpreter(monkeypatch):
    monkeypatch.setenv("MUPBENCH_KERNELS", "triton")
    with pytest.raises(ValueError, match="need CUDA tensors.*TRITON_INTERPRET=1"):
        kernels.rms_norm(torch.ones(2, 3))
    with pytest.raises(ValueError, match="need CUDA tensors.*TRITON_INTERPRET=1"):
        kernels.attention(*(torch.ones(1, 1, 2, 16) for _ in range(3)), 0.25)


def test_import_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, kernels\n"
        "assert kernels.backend('cuda') == 'torch'\n"
        "assert kernels.rms_norm(torch.ones(2, 3)).shape == (2, 3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MUPBENCH_KERNELS", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
