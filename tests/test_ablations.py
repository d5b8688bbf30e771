"""Every registered ablation changes exactly what it names, builds, and trains a step; user ablations plug in."""
import dataclasses
import json
import math
import textwrap

import pytest
import torch
import torch.nn.functional as F

from mupbench import ablations
from mupbench.ablations.suites import apply_changes, plan
from mupbench import build_model, build_optimizer
from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.errors import UserError

from conftest import run_cli

DATA = DataSpec("test", "0" * 64, 10**6, 256)
PRESET = ablations.get_preset("cpu-micro")
EXPECTED_NAMES = {
    "baseline", "standard_parameterization", "projection_biases", "rmsnorm_gains_vector", "rmsnorm_gains_scalar",
    "embedding_normalization", "zero_query_init", "sp_unembedding_init", "zero_unembedding_init", "sp_attention_scale",
    "swiglu", "squared_relu", "gelu", "multi_query_attention", "batch_4x", "batch_quarter", "cosine_schedule",
    "wsd_schedule", "weight_decay_coupled", "weight_decay_independent", "lion",
    "muon", "embedding_lr_scaled", "adam_eps_scaled", "weight_decay_mup_adamw",
}


def test_the_full_lingle_set_is_registered():
    assert EXPECTED_NAMES <= set(ablations.REGISTRY)
    for a in ablations.REGISTRY.values():
        assert a.reported in ("transfers", "shifts", "unknown") and a.source and a.description


def _resolved(abl):
    base = PRESET.base("mup")
    recipe = apply_changes(base, abl.changes(base))
    width = PRESET.widths[0]
    return (dataclasses.asdict(ModelConfig(width=width, **base["model"])),
            dataclasses.asdict(TrainConfig(lr=0.01, **base["train"])),
            dataclasses.asdict(ModelConfig(width=width, **recipe["model"])),
            dataclasses.asdict(TrainConfig(lr=0.01, **recipe["train"])), abl.changes(base))


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_ablation_changes_exactly_the_fields_it_names(name):
    base_m, base_t, m, t, changes = _resolved(ablations.get(name))
    differing = {f"model.{k}" for k in m if m[k] != base_m[k]} | {f"train.{k}" for k in t if t[k] != base_t[k]}
    assert differing == set(changes), f"{name} changes {differing}, declares {set(changes)}"
    assert (name == "baseline") == (not changes)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_ablation_builds_and_takes_a_finite_step(name):
    _, _, m, t, _ = _resolved(ablations.get(name))
    torch.manual_seed(0)
    model = build_model(ModelConfig(**m))
    opt = build_optimizer(model, lr=2**-7, optimizer=t["optimizer"], weight_decay=t["weight_decay"],
                          weight_decay_mode=t["weight_decay_mode"], betas=(t["beta1"], t["beta2"]),
                          weight_decay_tensors=t["weight_decay_tensors"], eps_scaling=t["eps_scaling"])
    tokens = torch.randint(0, 256, (2, 17))
    for _ in range(2):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert math.isfinite(loss.item())


@pytest.mark.parametrize("preset", ["cpu-tiny", "gpu-small", "paper"])
def test_batch_ablations_keep_tokens_fixed(preset):
    base = ablations.get_preset(preset).base("mup")
    tokens = base["train"]["batch_size"] * base["train"]["steps"]
    for name, factor in (("batch_4x", 4), ("batch_quarter", 0.25)):
        c = ablations.get(name).changes(base)
        assert c["train.batch_size"] * c["train.steps"] == tokens
        assert c["train.warmup"] == pytest.approx(base["train"]["warmup"] / factor, abs=0.5)


def test_lion_grid_is_shifted_down():
    specs = plan([(ablations.get("lion"), ("mup",)), (ablations.get("baseline"), ("mup",))], PRESET, DATA)
    lion = sorted({s.train.log2_lr for s in specs if s.ablation == "lion"})
    adam = sorted({s.train.log2_lr for s in specs if s.ablation == "baseline"})
    assert [a - b for a, b in zip(lion, adam)] == [PRESET.lion_log2_shift] * len(adam)


@pytest.mark.parametrize("preset", ["cpu-micro", "cpu-tiny", "gpu-small", "paper"])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "wsd"])
def test_effective_steps_formula_is_the_schedules_sum(preset, schedule):
    from mupbench.ablations.weight_decay import effective_steps
    from mupbench.optim import schedule as lr_schedule

    t = {**ablations.get_preset(preset).base("mup")["train"], "schedule": schedule}
    if t["steps"] > 20_000:
        t = {**t, "steps": t["steps"] // 50, "warmup": t["warmup"] // 50}
    total = sum(lr_schedule(i, t["steps"], t["warmup"], schedule, t["final_lr_fraction"], t["decay_fraction"])
                for i in range(t["steps"]))
    assert effective_steps(t) == pytest.approx(total, rel=0.02)


def _decay_exposure(name: str, width: int, log2_lr: float) -> dict[str, float]:
    """Σ_t s(t)·lr_group·wd_group per tensor for ablation `name` at cpu-tiny: the run's total decay exposure T_eff/τ."""
    from mupbench.ablations.weight_decay import effective_steps

    preset = ablations.get_preset("cpu-tiny")
    base = preset.base("mup")
    recipe = apply_changes(base, ablations.get(name).changes(base))
    model = build_model(ModelConfig(width=width, **{**recipe["model"], "depth": 1, "norm_gains": "vector"}))
    t = recipe["train"]
    opt = build_optimizer(model, lr=2.0**log2_lr, weight_decay=t["weight_decay"], weight_decay_mode=t["weight_decay_mode"],
                          weight_decay_tensors=t["weight_decay_tensors"])
    return {n: effective_steps(t) * g["lr"] * g["weight_decay"] for g in opt.param_groups for n in g["names"]}


def test_weight_decay_ablations_are_set_by_their_timescale():
    """All three forms: T_eff/τ = 4 at the base width and α_ref, on every tensor (gains too: they all decay). Then
    coupled falls as 1/wm on the α/wm tensors, MuAdam's form stays put, independent ignores the LR as well."""
    names = ("weight_decay_coupled", "weight_decay_independent", "weight_decay_mup_adamw")
    for name in names:
        exposure = _decay_exposure(name, 32, -5)
        assert exposure["final_norm.weight"] > 0
        for tensor, e in exposure.items():
            assert e == pytest.approx(4.0, rel=1e-3), (name, tensor)
    wide = {name: _decay_exposure(name, 128, -5) for name in names}
    assert wide["weight_decay_coupled"]["blocks.0.attn.q.weight"] == pytest.approx(1.0, rel=1e-3)
    assert wide["weight_decay_coupled"]["embed.weight"] == pytest.approx(4.0, rel=1e-3)
    assert wide["weight_decay_mup_adamw"]["blocks.0.attn.q.weight"] == pytest.approx(4.0, rel=1e-3)
    assert wide["weight_decay_independent"]["unembed.weight"] == pytest.approx(4.0, rel=1e-3)
    low_lr = _decay_exposure("weight_decay_independent", 128, -9)
    assert low_lr["blocks.0.attn.q.weight"] == pytest.approx(4.0, rel=1e-3)
    assert _decay_exposure("weight_decay_mup_adamw", 128, -7)["blocks.0.attn.q.weight"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("preset", ["cpu-micro", "cpu-tiny", "gpu-small", "paper", "cpu-tiny-paper-heads"])
def test_sp_attention_scale_is_the_papers_factor_at_any_head_dim(preset):
    p = ablations.get_preset(preset)
    base = p.base("mup")
    recipe = apply_changes(base, ablations.get("sp_attention_scale").changes(base))
    width = p.widths[0]
    scale = build_model(ModelConfig(width=width, **{**recipe["model"], "depth": 1})).blocks[0].attn.scale
    mup = build_model(ModelConfig(width=width, **{**base["model"], "depth": 1})).blocks[0].attn.scale
    assert scale / mup == pytest.approx(math.sqrt(128))
    if base["model"]["head_dim"] == 128:  # the paper's head dim: exactly SP's 1/√D
        assert scale == pytest.approx(128**-0.5)


@pytest.mark.parametrize("preset", ["cpu-tiny-paper-heads", "gpu-small-paper-heads"])
def test_paper_head_layout_presets(preset):
    p = ablations.get_preset(preset)
    heads = [ModelConfig(width=w, **p.base("mup")["model"]).heads for w in p.widths]
    assert p.model["head_dim"] == p.model["base_width"]
    assert heads == [w // p.model["base_width"] for w in p.widths] and heads[0] == 1


def test_new_ablations_are_listed_with_their_verdicts_and_sources():
    res = run_cli("list", "--json")
    assert res.returncode == 0, res.stderr
    listed = {a["name"]: a for a in json.loads(res.stdout)["ablations"]}
    expected = {"muon": ("transfers", "transfers"), "embedding_lr_scaled": ("unknown", "shifts"),
                "adam_eps_scaled": ("unknown", "transfers"), "weight_decay_mup_adamw": ("unknown", "transfers")}
    for name, (reported, expect) in expected.items():
        assert (listed[name]["reported"], listed[name]["expected"]) == (reported, expect)
        assert listed[name]["source"] and listed[name]["changes"]
    assert "2505.02222" in listed["muon"]["source"] and "original" in listed["muon"]["source"]
    assert listed["weight_decay_coupled"]["changes"]["train.weight_decay_tensors"] == "all"
    assert "gains and biases" in listed["weight_decay_coupled"]["description"]


OUT_OF_RANGE = textwrap.dedent('''
    from mupbench.ablations import ablation

    @ablation(reported="unknown", source="test")
    def negative_decay_test(base):
        """λ < 0."""
        return {"train.weight_decay": -0.1}

    @ablation(reported="unknown", source="test")
    def zero_logit_mult_test(base):
        """A logit multiplier of 0."""
        return {"model.attention_logit_mult": 0.0}

    @ablation(reported="unknown", source="test")
    def unknown_decay_form_test(base):
        """A decay form that does not exist."""
        return {"train.weight_decay_mode": "sometimes"}
''')


@pytest.mark.parametrize("name,message", [("negative_decay_test", "weight_decay must be >= 0"),
                                          ("zero_logit_mult_test", "attention_logit_mult must be a positive"),
                                          ("unknown_decay_form_test", "weight_decay_mode='sometimes'")])
def test_out_of_range_ablation_values_are_refused_before_any_run(tmp_path, corpus_file, name, message):
    mine = tmp_path / "mine.py"
    mine.write_text(OUT_OF_RANGE)
    out = tmp_path / "sweep"
    res = run_cli("run", "--ablations", str(mine), "--ablation", name, "--preset", "cpu-micro", "--data",
                  str(corpus_file), "--out", str(out))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and message in lines[0], res.stderr
    assert not out.exists()


def test_full_sp_ablation_resolves_to_sp():
    specs = plan([(ablations.get("standard_parameterization"), ("mup",))], PRESET, DATA)
    assert {s.model.parameterization for s in specs} == {"sp"}


def test_unknown_name_lists_closest_matches():
    with pytest.raises(UserError, match="did you mean zero_query_init"):
        ablations.get("zero_qery_init")


def test_combination_and_conflict():
    combo = ablations.get("zero_query_init+squared_relu")
    assert combo.changes(PRESET.base("mup")) == {"model.query_init": "zero", "model.activation": "squared_relu"}
    with pytest.raises(UserError, match="both change model.activation"):
        ablations.get("swiglu+gelu").changes(PRESET.base("mup"))


def test_every_suite_plans_at_every_preset():
    for suite in ablations.SUITES.values():
        for preset in ablations.PRESETS.values():
            specs = plan(suite.resolve(), preset, DATA)
            assert len({s.run_hash for s in specs}) == len(specs) > 0


USER_FILE = textwrap.dedent('''
    from mupbench.ablations import ablation

    @ablation(reported="unknown", source="team notes <b>")
    def wide_mlp_test(base):
        """MLP hidden size 6·width <script>alert(1)</script>."""
        return {"model.mlp_ratio": 6.0}

    @ablation(reported="unknown", source="team notes")
    def bad_head_dim_test(base):
        """A head dim that does not divide the widths."""
        return {"model.head_dim": 7}
''')


def test_user_ablation_file_end_to_end(tmp_path, corpus_file):
    mine = tmp_path / "mine.py"
    mine.write_text(USER_FILE)
    res = run_cli("list", "--json", "--ablations", str(mine))
    assert res.returncode == 0, res.stderr
    listed = {a["name"]: a for a in json.loads(res.stdout)["ablations"]}
    assert listed["wide_mlp_test"]["changes"] == {"model.mlp_ratio": 6.0}
    assert {"name", "description", "reported", "source"} <= set(listed["wide_mlp_test"])

    out = tmp_path / "sweep"
    res = run_cli("run", "--ablations", str(mine), "--ablation", "wide_mlp_test", "--preset", "cpu-micro",
                  "--lrs", "2^-7,2^-6,2^-5", "--data", str(corpus_file), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "wide_mlp_test" in res.stdout
    res = run_cli("analyze", str(out), "--json")
    assert [v["ablation"] for v in json.loads(res.stdout)["verdicts"]] == ["wide_mlp_test"]

    bad = tmp_path / "bad"
    res = run_cli("run", "--ablations", str(mine), "--ablation", "bad_head_dim_test", "--preset", "cpu-micro",
                  "--data", str(corpus_file), "--out", str(bad))
    assert res.returncode == 2 and "bad_head_dim_test" in res.stderr and "not divisible" in res.stderr
    assert not bad.exists()


def test_user_ablation_entry_point(tmp_path):
    pkg = tmp_path / "site"
    (pkg / "team_ablations").mkdir(parents=True)
    (pkg / "team_ablations" / "__init__.py").write_text(USER_FILE.replace("_test(", "_ep("))
    dist = pkg / "team_ablations-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: team-ablations\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mupbench.ablations]\nteam = team_ablations\n")
    import os

    from conftest import ROOT
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{pkg}"}
    res = subprocess.run([sys.executable, "-m", "mupbench.cli", "list", "--json"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "wide_mlp_ep" in {a["name"] for a in json.loads(res.stdout)["ablations"]}


def test_broken_user_file_is_one_line_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    res = run_cli("list", "--ablations", str(bad))
    assert res.returncode == 2 and "boom" in res.stderr and "Traceback" not in res.stderr


def test_new_fields_at_their_defaults_keep_stored_runs_hashes():
    """Runs stored before the new switches existed keep their hashes (this one was computed before they did); a run
    that sets one gets a new hash."""
    model = ModelConfig(width=64, head_dim=16, base_width=32, norm_gains="vector", projection_biases=True)
    spec = RunSpec("baseline", model, TrainConfig(lr=2**-6, weight_decay=0.1), DataSpec("x", "0" * 64, 10, 256))
    assert spec.run_hash == "2b2e0aa849de0035"  # run semantics 2, computed before the new switches existed
    for change in ({"model": {"unembedding_bias": True}}, {"model": {"attention_logit_mult": 2.0}},
                   {"model": {"embedding_lr": "inv_wm"}}, {"train": {"weight_decay_tensors": "all"}},
                   {"train": {"eps_scaling": True}}):
        changed = dataclasses.replace(
            spec, model=dataclasses.replace(model, **change.get("model", {})),
            train=dataclasses.replace(spec.train, **change.get("train", {})))
        assert changed.run_hash != spec.run_hash, change
