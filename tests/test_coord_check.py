"""Coordinate check: μP passes, SP fails, and copies of the example model with a planted μP mistake fail, naming it.

Small widths and three steps keep each check to a few seconds on a CPU.
"""
import json

import pytest
import torch

from conftest import ROOT
from harness import byo
from harness.cli import main
from harness.coord_check import run_check

EXAMPLE = ROOT / "examples" / "my_model.py"
WIDTHS = (32, 64, 128, 256)

# Each planted mistake: exact edits to a copy of examples/my_model.py.
PLANTED = {
    "hidden_lr_not_scaled": [('{"params": hidden, "lr": lr / width_mult},', '{"params": hidden, "lr": lr},')],
    "sp_unembedding": [
        ("nn.init.normal_(self.lm_head.weight, std=1.0 / width)", "nn.init.normal_(self.lm_head.weight, std=width**-0.5)"),
        ('{"params": readout, "lr": lr / width_mult},', '{"params": readout, "lr": lr},'),
    ],
    "attention_inv_sqrt_d": [("scale=1.0 / self.head_dim", "scale=self.head_dim**-0.5")],
}


def planted(tmp_path, name):
    text = EXAMPLE.read_text()
    for old, new in PLANTED[name]:
        assert text.count(old) == 1, f"examples/my_model.py changed: cannot plant {name} ({old!r})"
        text = text.replace(old, new)
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return byo.resolve(f"{path}:build")


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problems(check):
    from harness.coord_check import describe_failure, worst_failures

    return [describe_failure(s) for s in worst_failures(check.failures())]


def test_example_model_passes():
    check = run_check("mup", WIDTHS, 3, source=byo.resolve(f"{EXAMPLE}:build"))
    assert check.passed, problems(check)
    assert check.lr_source.startswith("the model's mup_parameter_groups; tensors: 1 input-like (embedding), ")
    assert [a.exponent for a in check.attention] == pytest.approx([-1.0, -1.0])  # head dim grows: 1/D checked


def test_hidden_lr_not_scaled_is_caught(tmp_path):
    check = run_check("mup", WIDTHS, 3, source=planted(tmp_path, "hidden_lr_not_scaled"))
    assert not check.passed
    text = "\n".join(problems(check))
    for module in ("blocks.0.attn.proj", "blocks.0.mlp.down", "blocks.1.mlp.up"):
        assert f"{module}: mean|Δx| grows" in text
    assert "logits" not in {s.module for s in check.failures() if s.quantity == "mean_abs_update"}


def test_sp_unembedding_is_caught(tmp_path):
    check = run_check("mup", WIDTHS, 3, source=planted(tmp_path, "sp_unembedding"))
    assert not check.passed
    failing = {(s.module, s.quantity) for s in check.failures()}
    assert ("logits", "mean_abs_update") in failing
    assert all(module == "logits" for module, _ in failing), failing  # nothing else is blamed
    assert any(p.startswith("logits: mean|ΔW·x| grows 2^+") for p in problems(check))


def test_attention_inv_sqrt_d_is_caught_where_the_head_dim_grows(tmp_path):
    check = run_check("mup", WIDTHS, 3, source=planted(tmp_path, "attention_inv_sqrt_d"))
    assert not check.passed
    text = "\n".join(problems(check))
    assert "blocks.0.attn.attn_logits: attention scale ∝ D^-0.50 where the head dim D grows with width" in text
    assert "blocks.1.attn.attn_logits: attention scale" in text
    assert [a.head_dims for a in check.attention] == [[8, 16, 32, 64]] * 2


def test_builtin_mup_passes_and_sp_fails_naming_modules():
    widths = WIDTHS
    mup = run_check("mup", widths, 3)
    assert mup.passed, problems(mup)
    # fixed head dim: 1/D and 1/sqrt(D) differ by a constant, which no width scaling can show
    assert all(a.exponent is None and a.passed for a in mup.attention)
    sp = run_check("sp", widths, 3)
    assert not sp.passed and sp.as_expected
    failing = {s.module for s in sp.failures()}
    assert {"blocks.0.attn.o", "blocks.0.mlp.fc_out", "blocks.1.mlp"} <= failing
    assert "embed" not in failing  # the embedding's LR is α under both: it does not drift


def test_cli_writes_coord_check_json_and_exit_codes(tmp_path, capsys):
    model = f"{EXAMPLE}:build"
    assert main(["coord-check", "--model", model, "--widths", "32,64,128,256", "--steps", "2",
                 "--parameterization", "both", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "my_model.py:build · mup: PASS" in out and "my_model.py:build · sp: FAIL  (expected" in out
    doc = json.loads((tmp_path / "coord_check.json").read_text())
    assert doc["schema"] == "mupbench.coord_check/1"
    mup, sp = doc["checks"]
    assert (mup["parameterization"], mup["passed"], sp["passed"]) == ("mup", True, False)
    assert mup["widths"] == [32, 64, 128, 256] and mup["steps"] == [0, 1, 2] and mup["threshold"] == 0.5
    assert set(mup["records"][0]) >= {"width", "step", "module", "mean_abs", "mean_abs_delta"}
    assert set(mup["slopes"][0]) >= {"module", "step", "quantity", "slope", "passed"}
    bad = planted(tmp_path, "hidden_lr_not_scaled")
    assert main(["coord-check", "--model", bad.file + ":build", "--widths", "32,64,128,256", "--steps", "2"]) == 1
    assert "mean|Δx| grows" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--widths", "64,128"], "at least three different widths"),
    (["--parameterization", "mu"], "not one of: mup, sp, both"),
    (["--steps", "0"], "between 1 and 10"),
    (["--lr", "-1"], "must be > 0"),
    (["--reinit"], "only with --model"),
    (["--model", "nope.py:build"], "does not exist"),
])
def test_usage_errors_exit_2(args, message, capsys):
    assert main(["coord-check", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mupbench: error: ") and message in err
