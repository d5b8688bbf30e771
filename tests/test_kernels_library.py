"""The kernels' plumbing in the test process (no GPU, no interpreter): operator registration and fake-tensor tracing,
grids within CUDA's limits, the autocast cast, fallbacks reported by `backend()`, the pinned configuration table."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from mupbench import kernels
from mupbench.kernels import configs

has_triton = importlib.util.find_spec("triton") is not None
interpreting = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")
needs_compiler_triton = pytest.mark.skipif(not has_triton or interpreting, reason="needs Triton, without TRITON_INTERPRET")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("MUPBENCH_KERNELS", raising=False)
    kernels.reset_record()
    yield
    kernels.reset_record()


def test_autocast_casts_like_autocast_and_leaves_float64_alone():
    q64, q32 = torch.randn(1, 1, 2, 16, dtype=torch.float64), torch.randn(1, 1, 2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = kernels._autocast_inputs(q64, q32)
    assert a.dtype == torch.float64 and b.dtype == torch.bfloat16
    assert kernels._autocast_inputs(q32)[0].dtype == torch.float32  # no autocast: untouched


@needs_compiler_triton
def test_backend_reports_a_fallback(monkeypatch):
    monkeypatch.setattr(kernels, "_choice", lambda device: "triton")  # as on a GPU: Triton chosen first
    x = torch.randn(3, 8)
    y = kernels.rms_norm(x, None)  # CPU tensors: the Triton kernels cannot take them, so the reference runs
    assert torch.equal(y, kernels.reference.rms_norm(x, None))
    assert kernels.backend("cpu") == "torch"
    assert "need CUDA tensors" in kernels.fallbacks()["rms_norm on cpu"]
    kernels.reset_record()
    assert kernels.backend("cpu") == "triton" and kernels.fallbacks() == {}  # the prediction again


def test_backend_records_what_ran_per_device():
    kernels.rms_norm(torch.randn(2, 4))
    assert kernels.backend("cpu") == "torch"
    kernels._note(torch.device("cpu"), "attention", "triton")
    assert kernels.backend("cpu") == "triton+torch"


@needs_compiler_triton
def test_grids_stay_within_cuda_limits(monkeypatch):
    """B·H = 70,000 (> 65,535, CUDA's limit on grid axes 1 and 2): every launch's grid is 1-D, below 2³¹."""
    from mupbench.kernels import flash_attention, rmsnorm

    grids = []
    monkeypatch.setattr(flash_attention, "launch", lambda kernel, grid, *a, **k: grids.append((kernel, grid)))
    monkeypatch.setattr(rmsnorm, "launch", lambda kernel, grid, *a, **k: grids.append((kernel, grid)))
    for kv_heads in (70_000, 1):
        q = torch.randn(70_000, 1, 3, 16)
        k = torch.randn(70_000 // max(1, 70_000 // kv_heads), 1, 3, 16).expand(70_000, 1, 3, 16).contiguous()
        q_ = q.view(1, 70_000, 3, 16)
        k_ = k.view(1, 70_000, 3, 16)[:, :kv_heads]
        o, lse = torch.ops.mupbench.flash_attn(q_, k_, k_, 0.25, True)
        torch.ops.mupbench.flash_attn_bwd(o, q_, k_, k_, o, lse, 0.25, True)
    torch.ops.mupbench.rms_norm(torch.randn(70_000, 16), None, 1e-6)
    names = {getattr(kernel, "__name__", str(kernel)) for kernel, _ in grids}
    assert {"_attn_fwd", "_bwd_preprocess", "_attn_bwd", "_rms_norm_fwd"} <= names, names
    for kernel, grid in grids:
        assert len(grid) == 1 and 0 < grid[0] < 2**31, (kernel, grid)
    assert max(grid[0] for _, grid in grids) >= 70_000


@needs_compiler_triton
@pytest.mark.filterwarnings("ignore")
def test_operators_trace_with_fake_tensors():
    """make_fx in fake mode, forward and backward, as torch.compile's AOT tracing does: the graph holds the kernels
    (or the operators) and outputs of the right shapes, layouts and dtypes, without running anything."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def joint(q, k, v, x, r, w):
        ops = torch.ops.mupbench  # the public wrappers refuse CPU tensors; fake tracing does not run the kernels
        o = ops.flash_attn(q, k, v, 0.25, True)[0]
        y, h, _ = ops.add_rms_norm(x, r, w, 1e-6, torch.bfloat16)
        z = ops.rms_norm(h, w, 1e-6)[0]
        loss = o.float().sum() + y.float().sum() + z.sum()
        return (o, y, h, *torch.autograd.grad(loss, (q, k, v, x, r, w)))

    from mupbench.kernels import flash_attention, rmsnorm  # noqa: F401  (registers the operators)

    q = torch.randn(2, 5, 4, 16).transpose(1, 2).requires_grad_()  # (B, H, T, D) view of (B, T, H, D), as models do
    k = torch.randn(2, 5, 2, 16).transpose(1, 2).requires_grad_()
    v = torch.randn(2, 2, 5, 16, requires_grad=True)
    x = torch.randn(2, 5, 24, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(2, 5, 24, requires_grad=True)
    w = torch.randn(24, requires_grad=True)
    gm = make_fx(joint, tracing_mode="fake")(q, k, v, x, r, w)
    code = gm.code
    assert "triton_kernel_wrapper" in code or "mupbench" in code, code
    outputs = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    o, y, h, dq, dk, dv, dx, dr, dw = (n.meta["val"] for n in outputs)
    assert o.shape == (2, 4, 5, 16) and o.stride() == q.stride()  # q's layout: the model's reshape is a view
    assert dq.stride() == q.stride() and dk.stride() == k.stride() and dv.shape == v.shape
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32 and dx.dtype == torch.bfloat16
    assert dr.dtype == torch.float32 and dw.shape == (24,)


def test_pinned_table_entries_are_candidates_for_their_head_dim():
    from mupbench.kernels.pinned import ATTENTION

    assert ATTENTION, "the pinned table is empty"
    for key, entry in ATTENTION.items():
        arch, d, dtype, mask, group = key.split("/")
        fwd, bwd = configs._from_entry(entry)
        assert fwd in configs.FWD_CANDIDATES or fwd.name in {c.name for c in configs.FWD_CANDIDATES}, key
        assert bwd.name in {c.name for c in configs.BWD_CANDIDATES}, key
        assert key == configs.key(arch, int(d[1:]), getattr(torch, dtype), mask == "causal", int(group[1:]))
        limits = {c.name: c.max_head_dim for c in configs.FWD_CANDIDATES + configs.BWD_CANDIDATES}
        assert int(d[1:]) <= min(limits[fwd.name], limits[bwd.name]), f"{key}: a config that spills at this head dim"
        assert "source" in entry


def test_configs_come_from_the_table_and_are_recorded(monkeypatch, tmp_path):
    import json

    monkeypatch.setattr(configs, "arch", lambda device: "sm90")
    fwd, bwd, source = configs.attention(torch.device("cpu"), 64, torch.bfloat16, True, 1)
    assert source.startswith("predicted") and (fwd, bwd) == configs._from_entry(
        __import__("mupbench.kernels.pinned", fromlist=["ATTENTION"]).ATTENTION["sm90/d64/bfloat16/causal/g1"])
    assert configs.attention(torch.device("cpu"), 32, torch.float16, False, 3)[2] == "default"
    table = tmp_path / "tuned.json"
    entry = {"fwd": {"block_m": 64, "block_n": 32, "warps": 4, "stages": 3},
             "bwd": {"block": 32, "block_m1": 16, "block_n2": 16, "warps": 4, "stages": 2}, "source": "tuned here"}
    table.write_text(json.dumps({"attention": {"sm90/d64/bfloat16/causal/g1": entry}}))
    monkeypatch.setenv(configs.TABLE_ENV, str(table))
    fwd, bwd, source = configs.attention(torch.device("cpu"), 64, torch.bfloat16, True, 1)
    assert (fwd.block_m, bwd.block, source) == (64, 32, "tuned here")
    with configs.forced(bwd=configs.BWD_CANDIDATES[-1]):
        assert configs.attention(torch.device("cpu"), 64, torch.bfloat16, True, 1)[1:] == (configs.BWD_CANDIDATES[-1],
                                                                                           "forced")
    used = kernels.configs_used()
    assert used["attention sm90/d64/bfloat16/causal/g1"]["source"] == "forced"
