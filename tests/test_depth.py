"""Depth rules: the branch multiplier, the in-block LR, ε and init factors, and the depth coordinate check that tells
CompleteP from the standard rule (and from Depth-μP's lazy blocks)."""
import dataclasses

import pytest
import torch

from conftest import run_cli
from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.coord_check.depth import run_depth_check
from mupbench.model import build_model
from mupbench.optim import parameter_groups
from mupbench.parameterization import DEPTH_ONE, DEPTH_PARAMETERIZATIONS, depth_factor


def cfg(depth=8, rule="standard", base_depth=2, **kw):
    return ModelConfig(width=32, depth=depth, head_dim=16, base_width=32, depth_parameterization=rule,
                       base_depth=base_depth, **kw)


@pytest.mark.parametrize("rule, branch, lr, eps", [("standard", 1, 1, 1), ("depth_mup", 0.5, 0.5, 0.5),
                                                   ("completep", 0.25, 1, 0.25)])
def test_depth_rules_at_four_times_the_base_depth(rule, branch, lr, eps):
    c = cfg(8, rule)
    assert depth_factor(c, "branch_mult") == pytest.approx(branch)
    assert depth_factor(c, "lr_mult") == pytest.approx(lr)
    assert depth_factor(c, "eps_mult") == pytest.approx(eps)
    assert depth_factor(c, "init_mult") == 1.0
    at_base = cfg(2, rule)  # every rule is 1 at the base depth
    assert all(depth_factor(at_base, f) == 1.0 for f in ("branch_mult", "lr_mult", "eps_mult", "init_mult"))


def test_each_block_adds_its_branches_times_the_multiplier():
    """With the MLP's output zeroed, a block adds exactly b·attn(norm(x)) to the stream: b = 1/4 under CompleteP at
    4× the base depth, 1 under the standard rule, the same weights."""
    torch.manual_seed(0)
    standard = build_model(cfg(8, "standard"))
    complete = build_model(cfg(8, "completep"))
    complete.load_state_dict(standard.state_dict())
    x = torch.randn(2, 5, 32)
    added = {}
    for name, model in (("standard", standard), ("completep", complete)):
        block = model.blocks[3]
        with torch.no_grad():
            block.mlp.fc_out.weight.zero_()
            added[name] = block(x) - x
    assert torch.allclose(added["completep"], 0.25 * added["standard"], atol=1e-6)
    assert added["standard"].abs().mean() > 1e-3


def test_the_standard_rule_is_the_model_as_before():
    """Depth fields at their defaults leave the run hash unchanged (they enter it only when set)."""
    a = ModelConfig(width=32, depth=2, head_dim=16)
    ident = dataclasses.asdict(a)
    assert ident["depth_parameterization"] == "standard" and ident["base_depth"] == 2
    d = DataSpec("x", "0" * 64, 10, 256)
    spec = RunSpec("baseline", a, TrainConfig(lr=0.01), d)
    assert "depth_parameterization" not in spec.identity()["model"] and "base_depth" not in spec.identity()["model"]
    other = RunSpec("baseline", dataclasses.replace(a, depth_parameterization="completep"), TrainConfig(lr=0.01), d)
    assert other.run_hash != spec.run_hash


def _groups_by_name(model, **kw):
    return {n: g for g in parameter_groups(model, 1.0, 0.0, "coupled", eps=1e-8, **kw) for n in g["names"]}


@pytest.mark.parametrize("rule, lr, eps", [("depth_mup", 0.5, 0.5), ("completep", 1.0, 0.25), ("standard", 1.0, 1.0)])
def test_block_tensors_take_the_depth_lr_and_eps_and_the_rest_do_not(rule, lr, eps):
    model = build_model(cfg(8, rule, norm_gains="vector", projection_biases=True))
    reference = _groups_by_name(build_model(cfg(8, "standard", norm_gains="vector", projection_biases=True)))
    groups = _groups_by_name(model)
    for name, g in groups.items():
        inside = name.startswith("blocks.")
        want = reference[name]["lr_mult"] * (lr if inside else 1.0)
        assert g["lr_mult"] == pytest.approx(want), name
        assert g.get("eps", 1e-8) == pytest.approx(1e-8 * (eps if inside else 1.0)), name
    # every kind of in-block tensor is covered: hidden matrices, gains, biases
    assert {"blocks.0.attn.q.weight", "blocks.0.norm_attn.weight", "blocks.0.mlp.fc_in.bias"} <= set(groups)
    assert "final_norm.weight" in groups and "embed.weight" in groups and "unembed.weight" in groups


def test_eps_scaling_takes_the_width_rule_times_the_depth_eps_rule():
    model = build_model(ModelConfig(width=64, depth=8, head_dim=16, base_width=32, depth_parameterization="depth_mup"))
    groups = _groups_by_name(model, eps_scaling=True)
    assert groups["blocks.0.attn.q.weight"]["eps"] == pytest.approx(1e-8 * 0.5 * 0.5)  # 1/wm · m_L^-1/2
    assert groups["unembed.weight"]["eps"] == pytest.approx(1e-8 * 0.5)  # 1/wm only


def test_init_does_not_change_with_depth():
    for rule in DEPTH_PARAMETERIZATIONS:
        torch.manual_seed(0)
        deep = build_model(cfg(16, rule))
        assert deep.blocks[5].attn.q.weight.std().item() == pytest.approx(32**-0.5, rel=0.1)


# --- the depth coordinate check ---------------------------------------------------------------------------------
def _check(rule, **kw):
    return run_depth_check(rule, depths=(2, 4, 8, 16), width=64, seeds=(0,), **kw)


def test_depth_check_passes_completep_and_fails_standard_on_the_residual_stream():
    complete = _check("completep")
    assert complete.passed and complete.as_expected and complete.axis == "depth"
    standard = _check("standard")
    assert not standard.passed and standard.as_expected
    failing = {(s.module, s.quantity) for s in standard.failures()}
    assert ("residual stream", "mean_abs") in failing and ("residual stream", "mean_abs_delta") in failing
    grows = next(s for s in standard.slopes if s.module == "residual stream" and s.quantity == "mean_abs_delta"
                 and s.step == 3)
    assert grows.slope > 0.8  # updates ∝ L without branch scaling


def test_depth_check_finds_depth_mups_lazy_blocks():
    lazy = _check("depth_mup")
    assert not lazy.passed and lazy.as_expected
    failing = {s.module for s in lazy.failures() if s.quantity == "mean_abs_update"}
    assert "blocks.*.mlp.fc_in" in failing
    assert all(s.passed for s in lazy.slopes if s.module == "residual stream")  # its stream is fine


def test_depth_check_catches_completep_without_its_branch_multiplier(monkeypatch):
    rule = DEPTH_PARAMETERIZATIONS["completep"]
    monkeypatch.setitem(DEPTH_PARAMETERIZATIONS, "completep", dataclasses.replace(rule, branch_mult=DEPTH_ONE))
    assert not _check("completep").passed


def test_depth_check_catches_completep_with_depth_mups_lr(monkeypatch):
    rule = DEPTH_PARAMETERIZATIONS["completep"]
    monkeypatch.setitem(DEPTH_PARAMETERIZATIONS, "completep",
                        dataclasses.replace(rule, lr_mult=DEPTH_PARAMETERIZATIONS["depth_mup"].lr_mult))
    assert not _check("completep").passed


def test_coord_check_cli_on_depth(tmp_path):
    res = run_cli("coord-check", "--depth-rule", "all", "--depths", "2,4,8", "--seeds", "0", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr  # every rule as expected: completep passes, the others fail
    assert "depth rule completep: PASS" in res.stdout and "depth rule standard: FAIL" in res.stdout
    assert "per depth doubling" in res.stdout
    doc = (tmp_path / "coord_check.json").read_text()
    assert '"axis": "depth"' in doc and '"depths": [' in doc
    for args, text in ((["--depth-rule", "alpha"], "--depth-rule 'alpha' is not one of"),
                       (["--depth-rule", "completep", "--depths", "2,0,4"], "--depths"),
                       (["--depth-rule", "completep", "--depths", "2,4"], "at least three"),
                       (["--depth-rule", "completep", "--width", "40"], "multiple of the head dim")):
        bad = run_cli("coord-check", *args)
        assert bad.returncode == 2 and text in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


def test_a_model_without_depth_rules_is_unscaled():
    """harness/byo's models scale width only: a `blocks.` parameter name gets no depth factor (and needs no depth)."""
    from mupbench.byo.groups import Scale

    assert depth_factor(Scale("mup", 64, 32), "lr_mult") == 1.0
    assert depth_factor(Scale("mup", 64, 32), "eps_mult") == 1.0
