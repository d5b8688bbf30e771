"""Coordinate check: μP passes, SP fails, and copies of the example model with a planted μP mistake fail, naming it.

Small widths and three steps keep each check to a few seconds on a CPU.
"""
import json

import pytest
import torch
import torch.nn as nn

from conftest import ROOT
from mupbench import byo
from mupbench.cli import main
from mupbench.coord_check import THRESHOLD, run_check

EXAMPLE = ROOT / "examples" / "my_model.py"
WIDTHS = (32, 64, 128, 256)

# Each planted mistake: exact edits to a copy of examples/my_model.py, and the failure it must produce.
HIDDEN = '{"params": hidden, "lr": lr / width_mult},'
PLANTED = {
    "hidden_lr_not_scaled": [(HIDDEN, '{"params": hidden, "lr": lr},')],
    "hidden_lr_wm2": [(HIDDEN, '{"params": hidden, "lr": lr / width_mult**2},')],
    "one_layer_lr_sqrt_wm": [
        ('if name.startswith("blocks.")]', 'if name.startswith("blocks.") and name != "blocks.0.mlp.down.weight"]'),
        (HIDDEN, HIDDEN + '\n            {"params": [self.blocks[0].mlp.down.weight], "lr": lr / width_mult**0.5},'),
    ],
    "sp_unembedding": [
        ("nn.init.normal_(self.lm_head.weight, std=1.0 / width)", "nn.init.normal_(self.lm_head.weight, std=width**-0.5)"),
        ('{"params": readout, "lr": lr / width_mult},', '{"params": readout, "lr": lr},'),
    ],
    "attention_inv_sqrt_d": [("scale=1.0 / self.head_dim", "scale=self.head_dim**-0.5")],
    "constant_init_std": [("std=module.in_features**-0.5", "std=0.05")],
    "frozen_module": [("# μP readout: 1/width", "\n        self.blocks[0].mlp.up.weight.requires_grad_(False)")],
    "decay_not_scaled_with_lr": [(HIDDEN, '{"params": hidden, "lr": lr / width_mult, "weight_decay": 0.1},')],
}
# Correct μP in other styles (must pass at every seed): an output multiplier applied in place after a final
# LayerNorm, and an nn.Linear subclass scaling its input in its own forward (as microsoft/mup's MuReadout does). Both
# move the readout's 1/width_mult into a multiplier, so its LR is α (vector-like, as MuAdam treats it).
READOUT_MULTIPLIER = [
    ("self.lm_head = nn.Linear(width, VOCAB, bias=False)",
     "self.ln_f = nn.LayerNorm(width)\n        self.lm_head = nn.Linear(width, VOCAB, bias=False)"),
    ("std=1.0 / width)  # μP readout: 1/width", "std=BASE_WIDTH**-0.5)"),
    ("embedding = [self.tok_emb.weight]", "embedding = [self.tok_emb.weight, *self.ln_f.parameters()]"),
    ('{"params": readout, "lr": lr / width_mult},', '{"params": readout, "lr": lr},'),
]
STYLES = {
    "inplace_output_multiplier": READOUT_MULTIPLIER + [
        ("return self.lm_head(rms_norm(x))",
         "y = self.ln_f(x)\n        y *= 2.0 / (self.width / BASE_WIDTH)\n        return self.lm_head(y)")],
    "linear_subclass_scaling_its_input": READOUT_MULTIPLIER + [
        ("self.lm_head = nn.Linear(width, VOCAB, bias=False)", "self.lm_head = ScaledReadout(width, VOCAB, BASE_WIDTH / width)"),
        ("class MyModel(nn.Module):", "class ScaledReadout(nn.Linear):\n"
         "    def __init__(self, fan_in, fan_out, mult):\n"
         "        super().__init__(fan_in, fan_out, bias=False)\n"
         "        self.mult = mult\n\n"
         "    def forward(self, x):\n"
         "        return super().forward(x * self.mult)\n\n\n"
         "class MyModel(nn.Module):"),
        ("return self.lm_head(rms_norm(x))", "return self.lm_head(self.ln_f(x))"),
    ],
}
MODELS = ROOT / "tests" / "models"


def edited(tmp_path, name):
    text = EXAMPLE.read_text()
    for old, new in {**PLANTED, **STYLES}[name]:
        assert text.count(old) == 1, f"examples/my_model.py changed: cannot make {name} ({old!r})"
        text = text.replace(old, new)
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return byo.resolve(f"{path}:build")


planted = edited


@pytest.fixture(autouse=True)
def _threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problems(check):
    from mupbench.coord_check import describe_failure, worst_failures

    return [describe_failure(s) for s in worst_failures(check.failures())]


def test_example_model_passes():
    check = run_check("mup", WIDTHS, 3, source=byo.resolve(f"{EXAMPLE}:build"))
    assert check.passed, problems(check)
    assert check.seeds == [0, 1, 2] and check.batch == [2, 16]
    assert check.lr_source.startswith("the model's mup_parameter_groups; tensors: 1 input-like (embedding), ")
    assert [a.exponent for a in check.attention] == pytest.approx([-1.0, -1.0])  # head dim grows: 1/D checked
    init = {s.module: s for s in check.slopes if s.quantity == "mean_abs"}
    assert init["blocks.0.mlp.up"].bound == "both" and init["logits"].bound == "growth"  # logits may vanish at init


# name → the failures that must be reported (each "module: text"), and whether nothing else may be blamed
MISTAKES = {
    "hidden_lr_not_scaled": (["blocks.0.attn.proj: mean|ΔW·x| grows", "blocks.1.mlp.down: mean|ΔW·x| grows"], False),
    "hidden_lr_wm2": (["blocks.0.attn.proj: mean|ΔW·x| shrinks", "blocks.1.mlp.up: mean|ΔW·x| shrinks"], False),
    "one_layer_lr_sqrt_wm": (["blocks.0.mlp.down: mean|ΔW·x| grows"], True),
    "sp_unembedding": (["logits: mean|ΔW·x| grows"], True),
    "attention_inv_sqrt_d": (["blocks.0.attn.attn_logits: attention scale ∝ D^-0.50 where the head dim D grows",
                              "blocks.1.attn.attn_logits: attention scale ∝ D^-0.50"], True),
    "constant_init_std": (["blocks.0.attn.qkv: mean|x| at init grows", "blocks.1.mlp.down: mean|x| at init grows"],
                          False),
    "frozen_module": (["blocks.0.mlp.up: its weight never changes"], True),
    "decay_not_scaled_with_lr": (["blocks.0.attn.qkv: weight decay per step lr·λ ∝ width^-1.00",
                                  "blocks.1.mlp.down: weight decay per step lr·λ ∝ width^-1.00"], False),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_planted_mistake_fails_naming_the_layer(tmp_path, name):
    check = run_check("mup", WIDTHS, 3, source=edited(tmp_path, name))
    assert not check.passed
    found = problems(check)
    expected, alone = MISTAKES[name]
    for text in expected:
        assert any(p.startswith(text) for p in found), (text, found)
    if alone:  # nothing else is blamed but the layer and the modules whose output contains it
        modules = {t.split(":")[0] for t in expected}
        blamed = {s.module for s in check.failures()}
        assert all(any(m == b or m.startswith(b + ".") for m in modules) for b in blamed), found


def test_a_layer_lr_off_by_sqrt_wm_is_outside_the_noise(tmp_path):
    check = run_check("mup", WIDTHS, 3, source=edited(tmp_path, "one_layer_lr_sqrt_wm"))
    worst = max((s for s in check.failures()), key=lambda s: s.slope)
    assert worst.slope - 3 * worst.stderr > THRESHOLD  # +0.5 expected, seeds agree within a few hundredths


@pytest.mark.parametrize("name", STYLES)
def test_correct_styles_pass_at_every_seed(tmp_path, name):
    source = edited(tmp_path, name)
    for seeds in ((0, 1, 2), (3, 4, 5)):
        check = run_check("mup", WIDTHS, 3, source=source, seeds=seeds)
        assert check.passed, (seeds, problems(check))
    assert check.seeds == [3, 4, 5]


@pytest.mark.parametrize("factory", ["public_styles.py:nanogpt_mup", "public_styles.py:cerebras", "mup_gpt.py:build"])
def test_public_mup_gpt_styles_pass(factory):
    if factory.startswith("mup_gpt"):
        pytest.importorskip("mup", reason="microsoft/mup is a test dependency: pip install --no-deps mup==1.0.0")
    source = byo.resolve(f"{MODELS / factory}")
    check = run_check("mup", (64, 128, 256, 512), 3, source=source)  # their base width is 64
    assert check.passed, problems(check)


def test_mup_package_gpt_sp_fails():
    pytest.importorskip("mup", reason="microsoft/mup is a test dependency: pip install --no-deps mup==1.0.0")
    # mup's own SP (set_base_shapes(model, None): every width multiplier 1) through its MuAdamW groups
    check = run_check("mup", WIDTHS, 3, source=byo.resolve(f"{MODELS / 'mup_gpt.py'}:build_sp"))
    assert not check.passed
    found = problems(check)
    assert any(p.startswith("blocks.0.c_fc: mean|ΔW·x| grows") for p in found), found
    # and mupbench's SP of the μP model (one global LR)
    sp = run_check("sp", WIDTHS, 3, source=byo.resolve(f"{MODELS / 'mup_gpt.py'}:build"))
    assert not sp.passed and sp.as_expected


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
    assert doc["schema"] == "mupbench.coord_check/2"
    mup, sp = doc["checks"]
    assert (mup["parameterization"], mup["passed"], sp["passed"]) == ("mup", True, False)
    assert mup["widths"] == [32, 64, 128, 256] and mup["steps"] == [0, 1, 2] and mup["threshold"] == THRESHOLD
    assert set(mup["records"][0]) >= {"width", "step", "module", "mean_abs", "mean_abs_delta"}
    assert set(mup["slopes"][0]) >= {"module", "step", "quantity", "slope", "passed", "bound", "stderr", "seeds"}
    from mupbench.reports.plots import coord_check_figure
    from mupbench.reports.sweep import read_coord_check

    shown, problem = read_coord_check(tmp_path)  # the report's coord-check panel reads and plots it
    assert problem is None and coord_check_figure(shown["checks"][0])[:4] == b"\x89PNG"
    bad = planted(tmp_path, "hidden_lr_not_scaled")
    assert main(["coord-check", "--model", bad.file + ":build", "--widths", "32,64,128,256", "--steps", "2"]) == 1
    assert "mean|Δx| grows" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--widths", "64,128"], "at least three different widths"),
    (["--parameterization", "mu"], "not one of: mup, sp, both"),
    (["--steps", "0"], "between 1 and 10"),
    (["--lr", "-1"], "must be > 0"),
    (["--reinit"], "only with --model"),
    (["--seeds", "0,x"], "is not an integer seed"),
    (["--seq-len", "0"], "--seq-len must be at least 1"),
    (["--model", "nope.py:build"], "does not exist"),
])
def test_usage_errors_exit_2(args, message, capsys):
    assert main(["coord-check", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mupbench: error: ") and message in err


def test_seq_len_fits_a_small_block_size_and_json_stays_clean(capsys):
    model = f"{MODELS / 'public_styles.py'}:nanogpt_mup_block32"
    assert main(["coord-check", "--model", model, "--widths", "32,64,128", "--seeds", "0", "--seq-len", "64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AssertionError: Cannot forward sequence of length 64" in err
    assert "a shorter --seq-len fits a smaller block size" in err
    assert main(["coord-check", "--model", model, "--widths", "32,64,128", "--seeds", "0", "--seq-len", "32",
                 "--json"]) in (0, 1)  # the check ran (whether 3 small widths and one seed pass is not the point)
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # the factory's prints went to stderr
    assert doc["checks"][0]["batch"] == [2, 32] and "building a nanoGPT-style model" in captured.err


def test_recorder_keeps_copies_and_runs_each_layers_own_forward():
    from mupbench.coord_check import Recorder

    class Scaled(nn.Linear):
        def forward(self, x):
            return super().forward(x * 0.25)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.norm, self.head = nn.Embedding(8, 16), nn.LayerNorm(16), Scaled(16, 8)

        def forward(self, tokens):
            y = self.norm(self.emb(tokens))
            y *= 3.0  # in place, after the norm's hook has recorded its output
            return self.head(y) * 2.0  # an output multiplier: the readout is reported as "logits"

    net = Net()
    recorder = Recorder(net)
    tokens = torch.arange(8).view(1, 8)
    delta = torch.randn(8, 16)
    with torch.no_grad():
        net.head.weight.add_(delta)
        logits, outputs, updates = recorder.forward(tokens)
    norm = net.norm(net.emb(tokens))
    assert torch.allclose(outputs["norm"], norm)  # not 3× the norm: a copy was kept
    assert "head" not in outputs and torch.allclose(outputs["logits"], logits)
    expected = 2.0 * (3.0 * norm * 0.25) @ delta.T  # through Scaled.forward, then the model's ×2
    assert torch.allclose(updates["logits"], expected, rtol=1e-4)
    recorder.close()
