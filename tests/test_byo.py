"""Bring your own model: shape inference, parameter groups, re-initialisation, run identity, `mupbench run --model`."""
import json
import sqlite3

import pytest
import torch
import torch.nn as nn

from conftest import ROOT, run_cli
from mupbench import byo
from mupbench.cli import main
from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.errors import UserError
from mupbench.optim import build_optimizer, parameter_groups

EXAMPLE = ROOT / "examples" / "my_model.py"
SPEC = f"{EXAMPLE}:build"


@pytest.fixture(scope="module")
def example():
    source = byo.resolve(SPEC)
    return source, byo.load_factory(source)


def test_inference_classifies_every_tensor_of_the_example(example):
    source, factory = example
    infos = byo.infer(factory, 64, 128, source.label)
    kinds = {name: info.kind for name, info in infos.items()}
    assert kinds["tok_emb.weight"] == "input"
    assert kinds["lm_head.weight"] == "output"
    for name in ("blocks.0.attn.qkv.weight", "blocks.1.attn.proj.weight", "blocks.0.mlp.up.weight", "blocks.1.mlp.down.weight"):
        assert kinds[name] == "matrix", name
    assert infos["blocks.1.mlp.down.weight"].fan_in == 256  # 4·width, from the (fan_out, fan_in) layout
    assert infos["lm_head.weight"].role == "unembedding" and infos["tok_emb.weight"].role == "embedding"


def test_inferred_lrs_match_the_models_own_groups(example):
    """The table applied to inferred roles gives exactly the LRs the example's mup_parameter_groups hands to AdamW."""
    source, factory = example
    prepared = byo.prepare(factory, 256, 64, "mup", False, source.label)
    own = {n: g["lr"] for g in prepared.groups(0.01) for n in g["names"]}
    assert prepared.lr_source == "the model's mup_parameter_groups"
    inferred = {}  # the table applied to the inferred roles: what a model without the hook gets
    roles = [(n, p, prepared.infos[n].role) for n, p in prepared.model.named_parameters()]
    for g in parameter_groups(prepared.model, 0.01, 0.0, "coupled", roles=roles, cfg=prepared.scale):
        inferred.update({n: g["lr"] for n in g["names"]})
    assert inferred == pytest.approx(own)
    assert own["blocks.0.attn.qkv.weight"] == pytest.approx(0.01 / 4) and own["tok_emb.weight"] == 0.01


def test_sp_ignores_the_hook_and_uses_one_lr(example):
    source, factory = example
    prepared = byo.prepare(factory, 128, 64, "sp", False, source.label)
    assert {g["lr"] for g in prepared.groups(0.01)} == {0.01}


class Tied(nn.Module):
    """A model without hooks, with a bias, a vector gain and a raw parameter laid out (fan_in, fan_out)."""

    def __init__(self, width):
        super().__init__()
        self.emb = nn.Embedding(32, width)
        self.hidden = nn.Linear(width, width)
        self.gain = nn.Parameter(torch.ones(width))
        self.scalar = nn.Parameter(torch.ones(1))
        self.readout = nn.Parameter(torch.randn(width, 32))  # x @ readout: (fan_in, fan_out)
        self.mup_roles = {"readout": "unembedding"}

    def forward(self, tokens):
        return (self.hidden(self.emb(tokens)) * self.gain * self.scalar) @ self.readout


def test_inference_without_hooks_and_role_overrides():
    infos = byo.infer(Tied, 16, 32, "tied")
    assert infos["emb.weight"].kind == "input"
    assert infos["hidden.weight"].kind == "matrix"
    assert (infos["hidden.bias"].kind, infos["hidden.bias"].role) == ("vector", "bias")
    assert (infos["gain"].kind, infos["gain"].role) == ("vector", "gain")
    assert infos["scalar"].kind == "fixed"
    assert infos["readout"].role == "unembedding" and infos["readout"].source == "mup_roles"
    prepared = byo.prepare(Tied, 64, 16, "mup", True, "tied")
    lrs = {n: g["lr"] for g in prepared.groups(1.0) for n in g["names"]}
    assert lrs == {"emb.weight": 1.0, "hidden.weight": 0.25, "hidden.bias": 1.0, "gain": 1.0, "scalar": 1.0,
                   "readout": 0.25}
    # --reinit applied the table: hidden fan_in^-1/2, readout 1/fan_in, bias 0, gain 1
    m = prepared.model
    assert m.hidden.weight.std().item() == pytest.approx(64**-0.5, rel=0.15)
    assert m.readout.std().item() == pytest.approx(1 / 64, rel=0.15)
    assert m.hidden.bias.abs().max().item() == 0 and m.gain.min().item() == 1


def test_default_trusts_the_models_init(example):
    source, factory = example
    torch.manual_seed(0)
    prepared = byo.prepare(factory, 128, 64, "mup", False, source.label)
    assert prepared.model.lm_head.weight.std().item() == pytest.approx(1 / 128, rel=0.1)
    torch.manual_seed(0)
    sp = byo.prepare(factory, 128, 64, "sp", True, source.label)
    assert sp.model.lm_head.weight.std().item() == pytest.approx(128**-0.5, rel=0.1)


@pytest.mark.parametrize("spec, message", [
    ("examples/my_model.py", "must be path/to/file.py:factory"),
    ("no/such/file.py:build", "does not exist"),
    (f"{EXAMPLE}:BASE_WIDTH", "is not a callable factory"),
    ("no_such_module_xyz:build", "cannot import"),
])
def test_bad_model_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        byo.resolve(spec)


def test_hook_that_leaves_out_a_parameter_is_refused(example):
    source, factory = example
    prepared = byo.prepare(factory, 64, 64, "mup", False, source.label)
    prepared.model.mup_parameter_groups = lambda lr: [{"params": [prepared.model.tok_emb.weight], "lr": lr}]
    with pytest.raises(UserError, match="leaves out blocks.0.attn.qkv.weight"):
        prepared.groups(0.01)


def test_width_dependent_structure_is_refused():
    class Deeper(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(width // 16))

    with pytest.raises(UserError, match="different parameters"):
        byo.infer(Deeper, 16, 32, "deeper")


def test_byo_runs_have_their_own_stable_identity(example, tmp_path):
    source, _ = example
    spec = RunSpec("baseline", ModelConfig(width=32), TrainConfig(lr=0.01), DataSpec("d", "0" * 64, 0, 256))
    assert "model_source" not in spec.identity()  # built-in runs: hashes unchanged
    byo_spec = RunSpec("baseline", spec.model, spec.train, spec.data, extra={"byo_model": source.to_json(False)})
    assert byo_spec.run_hash != spec.run_hash
    copy = tmp_path / "elsewhere" / "my_model.py"
    copy.parent.mkdir()
    copy.write_bytes(EXAMPLE.read_bytes())
    moved = byo.resolve(f"{copy}:build")
    same = RunSpec("baseline", spec.model, spec.train, spec.data, extra={"byo_model": moved.to_json(False)})
    assert same.run_hash == byo_spec.run_hash  # a moved file is the same model
    copy.write_text(EXAMPLE.read_text() + "\n# edited\n")
    edited = RunSpec("baseline", spec.model, spec.train, spec.data,
                     extra={"byo_model": byo.resolve(f"{copy}:build").to_json(False)})
    assert edited.run_hash != byo_spec.run_hash
    reinit = RunSpec("baseline", spec.model, spec.train, spec.data, extra={"byo_model": source.to_json(True)})
    assert reinit.run_hash != byo_spec.run_hash


def test_run_with_model_trains_the_users_model(tmp_path, corpus_file, capsys):
    out = tmp_path / "sweep"
    args = ["run", "--model", SPEC, "--preset", "cpu-micro", "--widths", "16,32", "--lrs", "2^-6,2^-5",
            "--ablation", "baseline,rmsnorm_gains_vector", "--out", str(out), "--data", str(corpus_file),
            "--workers", "2", "--quiet"]  # 1 thread each: no oversubscription on a busy CPU
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "skipping ablation 'rmsnorm_gains_vector' for --model" in r.stderr
    con = sqlite3.connect(out / "mupbench.sqlite")
    rows = con.execute("SELECT status, spec FROM runs").fetchall()
    assert len(rows) == 8 and {s for s, _ in rows} == {"ok"}  # baseline under mup and sp, 2 widths × 2 LRs
    extra = json.loads(rows[0][1])["extra"]["byo_model"]
    assert extra["factory"] == "build" and extra["reinit"] is False
    n_params = con.execute("SELECT DISTINCT n_params FROM runs WHERE width=16").fetchall()
    assert n_params == [(sum(p.numel() for p in byo.load_factory(byo.resolve(SPEC))(16).parameters()),)]
    con.close()
    # the example passes the coordinate check and the gate (cpu-micro cannot judge transfer: warnings, not failures)
    assert main(["coord-check", "--model", SPEC, "--widths", "32,64,128,256", "--out", str(out)]) == 0
    assert main(["gate", str(out)]) == 0
    assert "coord-check[mup]  pass" in capsys.readouterr().out
    # the directory now belongs to this model: the built-in model, or another model, is refused
    assert main(["run", "--preset", "cpu-micro", "--out", str(out), "--data", str(corpus_file)]) == 2
    assert "holds runs of --model" in capsys.readouterr().err
    other = tmp_path / "other.py"
    other.write_text(EXAMPLE.read_text().replace("HEADS = 4", "HEADS = 2"))
    assert main([a if a != SPEC else f"{other}:build" for a in args]) == 2
    err = capsys.readouterr().err
    assert "holds runs of a different model" in err and "use a new --out" in err


def test_grid_extension_follows_the_users_model(tmp_path, corpus_file):
    out = tmp_path / "sweep"
    r = run_cli("run", "--model", SPEC, "--preset", "cpu-micro", "--widths", "16,32", "--lrs", "2^-9,2^-8",
                "--extend-grid", "1", "--ablation", "baseline", "--out", str(out), "--data", str(corpus_file),
                "--workers", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "extending the grid" in r.stderr
    con = sqlite3.connect(out / "mupbench.sqlite")
    rows = con.execute("SELECT spec FROM runs").fetchall()
    con.close()
    assert len(rows) == 12  # (mup, sp) × 2 widths × (2 + 1) LRs, every one a run of the user's model
    assert all("byo_model" in json.loads(spec)["extra"] for (spec,) in rows)


class Hooked(nn.Module):
    """A model whose mup_parameter_groups returns whatever a test puts in `extra` (on every group)."""

    def __init__(self, width: int, extra: dict):
        super().__init__()
        self.emb, self.hidden = nn.Embedding(16, width), nn.Linear(width, width, bias=False)
        self.extra = extra

    def forward(self, tokens):
        return self.hidden(self.emb(tokens))

    def mup_parameter_groups(self, lr):
        return [{"params": [self.emb.weight], "lr": lr, **self.extra},
                {"params": [self.hidden.weight], "lr": lr / 2, **self.extra}]


def _hook_groups(extra: dict, weight_decay: float = 0.0):
    prepared = byo.prepare(lambda w: Hooked(w, extra), 64, 32, "mup", False, "hooked.py:build")
    return prepared.groups(0.01, weight_decay)


def test_hook_group_betas_and_eps_are_honoured():
    groups = _hook_groups({"betas": [0.9, 0.99], "eps": 1e-9})
    assert [(g["betas"], g["eps"]) for g in groups] == [((0.9, 0.99), 1e-9)] * 2
    opt = build_optimizer(None, 0.01, groups=groups)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[1]["eps"] == 1e-9


def test_hook_groups_as_muadamw_makes_them_are_accepted():
    torch_defaults = torch.optim.AdamW([nn.Parameter(torch.zeros(1))]).param_groups[0]
    extra = {k: v for k, v in torch_defaults.items() if k not in ("params", "lr")}
    groups = _hook_groups(extra)
    assert {k for g in groups for k in g} & {"amsgrad", "fused", "decoupled_weight_decay"} == set()
    assert [g["weight_decay"] for g in groups] == [0.01, 0.01]


@pytest.mark.parametrize("extra, message", [
    ({"decoupled_weight_decay": False, "weight_decay": 0.1}, "sets decoupled_weight_decay=False"),
    ({"amsgrad": True}, "sets amsgrad=True"),
    ({"momentum": 0.9}, "sets momentum=0.9"),
])
def test_hook_group_keys_mupbench_cannot_apply_are_refused(extra, message):
    with pytest.raises(UserError, match=message) as e:
        _hook_groups(extra)
    assert "\n" not in str(e.value) and "may set only lr, weight_decay, betas, eps" in str(e.value)


def test_hook_weight_decay_during_a_weight_decay_run_is_reported():
    assert _hook_groups({"weight_decay": 0.0})[0]["weight_decay"] == 0.0
    with pytest.raises(UserError, match=r"sets weight_decay \(0.05 in group 0\) while this run applies weight decay 0.1"):
        _hook_groups({"weight_decay": 0.05}, weight_decay=0.1)
    assert byo.hook_sets_weight_decay(lambda w: Hooked(w, {"weight_decay": 0.0}), 32, "hooked.py:build")
    assert not byo.hook_sets_weight_decay(lambda w: Hooked(w, {}), 32, "hooked.py:build")
