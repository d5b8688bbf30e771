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
def test_grids_stay_within_cuda_limits():
    """B·H = 70,000 (> 65,535, CUDA's limit on grid axes 1 and 2): every launch's grid is 1-D, below 2³¹."""
    from mupbench.kernels import flash_attention, rmsnorm
    from mupbench.kernels.library import recorded_launches

    fwd, bwd = configs.FWD_CANDIDATES[0].launch, configs.BWD_CANDIDATES[0].launch
    with recorded_launches(flash_attention, rmsnorm) as launches:
        for kv_heads in (70_000, 1):
            q = torch.randn(70_000, 1, 3, 16)
            k = torch.randn(70_000 // max(1, 70_000 // kv_heads), 1, 3, 16).expand(70_000, 1, 3, 16).contiguous()
            q_ = q.view(1, 70_000, 3, 16)
            k_ = k.view(1, 70_000, 3, 16)[:, :kv_heads]
            o, lse = torch.ops.mupbench.flash_attn(q_, k_, k_, 0.25, True, list(fwd), list(bwd))
            torch.ops.mupbench.flash_attn_bwd(o, q_, k_, k_, o, lse, 0.25, True, list(bwd))
        torch.ops.mupbench.rms_norm(torch.randn(70_000, 16), None, 1e-6)
    names = {getattr(kernel, "__name__", str(kernel)) for kernel, *_ in launches}
    assert {"_attn_fwd", "_bwd_preprocess", "_attn_bwd", "_rms_norm_fwd"} <= names, names
    for kernel, grid, *_ in launches:
        assert len(grid) == 1 and 0 < grid[0] < 2**31, (kernel, grid)
    assert max(grid[0] for _, grid, *_ in launches) >= 70_000


def _wrapped_kernels(fn) -> set[str]:
    """Names N in `wrap_triton(N)` calls written in fn's own body: what an older torch's scan of a triton_op finds (it
    does not follow helper functions)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return {node.args[0].id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "wrap_triton"
            and node.args and isinstance(node.args[0], ast.Name)}


@needs_compiler_triton
def test_operator_bodies_launch_their_kernels_where_torch_compile_finds_them():
    """torch.compile's caches key on the kernels torch finds in an operator's body: each body names its kernels in
    `wrap_triton(kernel)[grid](...)` itself, and torch's own scan (where this torch has it) finds them."""
    from mupbench.kernels import flash_attention as fa, rmsnorm as rn

    expected = {fa._attn_fwd_impl: {"_attn_fwd"}, fa._attn_bwd_impl: {"_bwd_preprocess", "_attn_bwd"},
                rn._rms_norm_impl: {"_rms_norm_fwd"}, rn._add_rms_norm_impl: {"_rms_norm_fwd"},
                rn._rms_norm_bwd_impl: {"_rms_norm_bwd"}, rn._add_rms_norm_bwd_impl: {"_rms_norm_bwd"}}
    for fn, kernels_ in expected.items():
        assert _wrapped_kernels(fn) == kernels_, fn.__name__
    found = getattr(torch._library.triton, "get_triton_kernels_for_op", None)
    if found is not None:
        for name, kernels_ in (("flash_attn", {"_attn_fwd"}), ("flash_attn_bwd", {"_bwd_preprocess", "_attn_bwd"}),
                               ("add_rms_norm", {"_rms_norm_fwd"}), ("rms_norm_bwd", {"_rms_norm_bwd"})):
            assert {getattr(k, "__name__", None) for k in found(f"mupbench::{name}")} >= kernels_, name


@needs_compiler_triton
@pytest.mark.filterwarnings("ignore")
def test_a_config_change_changes_what_a_compiled_model_launches(monkeypatch, tmp_path):
    """The attention configuration is an argument of the operator, read once while tracing: a compiled function's
    graph (what torch.compile caches, keyed on the graph) carries it, and a different table compiles to launches of
    the other config."""
    import json

    from torch._dynamo.backends.debugging import aot_eager

    from mupbench.kernels import flash_attention as fa
    from mupbench.kernels.library import recorded_launches

    monkeypatch.setattr(fa, "unsupported", lambda *args: None)  # CPU tensors: nothing is launched, only recorded
    monkeypatch.setattr(configs, "arch", lambda device: "sm90")
    first, second = configs.FWD_CANDIDATES[0], next(c for c in configs.FWD_CANDIDATES if c.block_m != 
                                                     configs.FWD_CANDIDATES[0].block_m)
    table = tmp_path / "tuned.json"
    graphs, launched = [], []

    def backend(gm, inputs):
        graphs.append(gm.code)
        return aot_eager(gm, inputs)

    def f(q, k, v):
        return fa.attention(q, k, v, 1 / 64, True) * 2

    q, k, v = (torch.randn(1, 2, 64, 64) for _ in range(3))
    for fwd in (first, second):
        entry = {"fwd": {n: getattr(fwd, n) for n in ("block_m", "block_n", "warps", "stages")},
                 "bwd": {n: getattr(configs.BWD_CANDIDATES[0], n)
                         for n in ("block", "block_m1", "block_n2", "warps", "stages")}, "source": "test"}
        table.write_text(json.dumps({"attention": {"sm90/d64/float32/causal/g1": entry}}))
        monkeypatch.setenv(configs.TABLE_ENV, str(table))
        torch._dynamo.reset()  # a new process, as far as dynamo is concerned
        with recorded_launches(fa) as launches:
            torch.compile(f, backend=backend, fullgraph=True)(q, k, v)
        launched.append({kw["BLOCK_M"] for kernel, _, _, kw in launches if kernel is fa._attn_fwd})
    assert launched == [{first.block_m}, {second.block_m}]
    assert str(list(first.launch)) in graphs[0] and str(list(second.launch)) in graphs[1], graphs


@needs_compiler_triton
def test_offline_compile_specialises_like_the_jit(monkeypatch):
    """kernels/tune.py's offline build (what `bench tune --compile-only` and the limits in configs.py rest on) takes
    the signature, constants, alignment hints and options that JITFunction.run itself computes for the same launch:
    the run path is driven here up to its compile call with a stand-in sm_90 driver, and must agree."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    from mupbench.kernels import flash_attention as fa, rmsnorm, tune
    from mupbench.kernels.library import recorded_launches

    class Sm90:  # what JITFunction.run asks of the driver before compiling
        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self):
            return "offline-sm90-test"

        def get_current_stream(self, device):
            return 0

    seen = []
    monkeypatch.setattr(JITFunction, "_do_compile", lambda self, key, signature, device, constexprs, options, attrs,
                        warmup: seen.append((signature, constexprs, attrs, options)))
    launches = tune.attention_launches(configs.FWD_CANDIDATES[0], configs.BWD_CANDIDATES[0], 128, kv_heads=4,
                                       layout="bthd")
    with recorded_launches(rmsnorm) as rms:
        torch.ops.mupbench.add_rms_norm(torch.empty(8, 1000), torch.empty(8, 1000), torch.empty(1000), 1e-6,
                                        torch.bfloat16)
    previous = driver._active
    driver.set_active(Sm90())
    try:
        for kernel, grid, args, kwargs in launches + rms:
            seen.clear()
            kernel[grid](*args, **kwargs)
            (signature, constexprs, attrs, options), = seen
            _, off_signature, off_constexprs, off_attrs, off_options = tune.specialise(kernel, args, kwargs, 90)
            assert (off_signature, off_constexprs, off_attrs) == (signature, constexprs, attrs), kernel.__name__
            assert off_options == options, kernel.__name__
            # the runtime's alignment hints are there: every pointer and every multiple-of-16 integer
            hinted = {i for (i,), hints in attrs.items() if ["tt.divisibility", 16] in hints}
            for i, arg in enumerate(args):
                if isinstance(arg, torch.Tensor):
                    assert i in hinted, (kernel.__name__, kernel.arg_names[i])
                elif isinstance(arg, int) and arg % 16 == 0 and arg not in (0,):
                    assert i in hinted, (kernel.__name__, kernel.arg_names[i])
    finally:
        driver._active = previous
    assert triton.__version__


@needs_compiler_triton
@pytest.mark.filterwarnings("ignore")
def test_operators_trace_with_fake_tensors():
    """make_fx in fake mode, forward and backward, as torch.compile's AOT tracing does: the graph holds the kernels
    (or the operators) and outputs of the right shapes, layouts and dtypes, without running anything."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def joint(q, k, v, x, r, w):
        ops = torch.ops.mupbench  # the public wrappers refuse CPU tensors; fake tracing does not run the kernels
        o = ops.flash_attn(q, k, v, 0.25, True, list(configs.FWD_CANDIDATES[0].launch),
                           list(configs.BWD_CANDIDATES[0].launch))[0]
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


@needs_compiler_triton
def test_a_non_positive_scale_is_left_to_the_reference(monkeypatch):
    """The forward takes the softmax maximum over the raw scores and scales once (exp2 of one fused multiply-subtract),
    which needs scale > 0: other scales are refused, so `auto` runs the reference for them."""
    from mupbench.kernels import flash_attention

    monkeypatch.setattr(flash_attention, "INTERPRET", True)  # past the CUDA check, as under the interpreter
    q = torch.randn(1, 2, 5, 16)
    assert flash_attention.unsupported(q, q, q, 0.25) is None
    for scale in (0.0, -0.25):
        assert "not positive" in flash_attention.unsupported(q, q, q, scale)


@needs_compiler_triton
@pytest.mark.filterwarnings("ignore")
def test_warming_compiles_what_the_jit_will_look_up(monkeypatch, tmp_path):
    """tune.warm builds each distinct launch once, in worker processes, into Triton's on-disk cache: the same builds
    (hashes) as the offline compile, which the JIT-path test above ties to JITFunction.run."""
    from mupbench.kernels import testing, tune

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    case = testing.AttentionCase(2, 2, 1, 8, 16, causal=True)
    # the small preprocess kernel only (compiles fast), from two shapes that specialise alike: compiled once
    launches = [launch for c in (case, testing.AttentionCase(4, 2, 1, 8, 16, causal=True))
                for launch in tune.case_launches(c, torch.float16, "sm90", 132)
                if launch[0].__name__ == "_bwd_preprocess"]
    result = tune.warm(launches, 90, workers=1)
    assert len(launches) == 2 and result["errors"] == [] and result["kernels"] == 1 and len(result["hashes"]) == 1
    assert {tune.compile_launch(kernel, args, kwargs, 90).hash for kernel, _, args, kwargs in launches} == set(
        result["hashes"])
    assert list((tmp_path / "cache").iterdir())
