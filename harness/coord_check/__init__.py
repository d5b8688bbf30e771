"""Coordinate check: do activations and their updates keep their size as the model gets wider, after a few steps?

The fast first line of the gate (microsoft/mup's check, made pass/fail). For each seed and width (default seeds 0,1,2,
widths 64…1024), seed torch, build the model, and take `steps` AdamW steps (default 3) at base LR 2^-7 on one fixed
batch of few tokens (2 × 16 bytes of text; the seed picks it, the same at every width). Before each step, record for
every module's output x_t (forward hooks on every module; the model's own output is "logits") mean|x_t| and
mean|x_t − x_0| — copies, so an in-place `y *= alpha` later in the forward cannot change them — and for each weight
layer mean|ΔW·x_t|, its own update: the module's own forward on its own inputs with the weight replaced by W_t − W_0
and the bias by 0 (torch.func.functional_call), so a multiplier inside the module (MuReadout, a Linear subclass that
scales its input) counts. A readout whose output the model multiplies afterwards (`logits = head(x) * alpha / m`) is
reported as "logits", its update times that multiplier. Every F.scaled_dot_product_attention call is intercepted too:
its logits q·k·scale are recorded as "<module>.attn_logits", and the scale it was given is kept.

Per module, quantity and step the check fits the slope of log2 magnitude against log2 width at each seed (log2
magnitude per width doubling) and judges their mean (the standard error over seeds is reported with it):

    mean|x_0|  init, width-sized outputs          |slope| ≤ threshold   (μP: Θ(1) coordinates; constant init std grows)
    mean|x_0|  init, fixed-size outputs (logits)   slope ≤ threshold    (μP lets them vanish: a 1/width readout)
    mean|Δx|   every module, steps ≥ 1             |slope| ≤ threshold   (attention logits: growth only, see below)
    mean|ΔW·x| every weight layer, steps ≥ 1       |slope| ≤ threshold   (and exactly 0 at every width: frozen, fails)
    attention scale, where the head dim D grows   scale ∝ D^e with |e + 1| ≤ 0.05  (μP: 1/D), read exactly
    weight decay per step lr·λ of each tensor     ∝ width^e with |e| ≤ 0.05  (μP: the same at every width), read exactly

Two-sided update bounds need coherent updates: with few tokens (a low-rank batch), Adam's update of a layer acts on
the batch's own inputs as a whole, so ΔW·x keeps its size under μP (slopes within ±0.1 below) and an LR too small by
wm (hidden LR α/wm²) shows as slope −1. With 8 × 64 tokens (the former default) part of each update is incoherent,
∝ width^-1/2, and μP's ΔW·x slopes reached −0.48. The LR is 2^-7 because at 2^-5 the first steps are already
non-linear at small widths: a correct model with an output multiplier read −0.49 ± 0.12 on its logits' ΔW·x at step 2.
Attention logits' change stays growth-only: where the head dim grows, q·Δk/D is partly incoherent in the first steps
(−0.42 under μP); the scale passed to attention tells 1/D from 1/√D exactly instead. Where the head dim is fixed (the
built-in model, Lingle's D = 128) the two differ by a constant, which no width scaling can show: the check reports it
and passes (the LR sweep is the test there). Attention computed by hand (softmax(q kᵀ · s)) is not intercepted; call
F.scaled_dot_product_attention to be checked.

Threshold 0.3 — a magnitude may change by at most 2^0.3 ≈ 1.23× per width doubling. Measured here (widths 64…1024,
3 steps, lr 2^-7, 2 × 16 tokens, seeds 0,1,2), the worst two-sided slope (mean over seeds ± its standard error; the
worst single seed in brackets):

EVIDENCE

Every correct model stays within ±WORST_OK (every single seed within ±WORST_SEED) and every planted mistake is out by
MIN_BAD or more, the subtlest (one layer's LR off by √wm) at +0.5 with a standard error of 0.01: 0.3 leaves a margin on
both sides. microsoft/mup's own test allows a 1.2× ratio over a 4× width change (|slope| ≈ 0.13); allenai OLMo-core
asserts |slope| ≤ 0.05 on magnitudes averaged over 10 seeds. SP is the counterexample: a check under SP is expected
to fail, and one that passes says the settings cannot tell SP from μP (exit 1). Runs on one CPU thread by default
(`--threads`), so results are identical on any machine with the same torch.

    record.py   forward hooks, own-update forwards and attention interception over a few steps (Recorder, measure)
    fit.py      slopes per module, quantity, step and seed; attention scale and weight-decay exponents; pass/fail
    check.py    one check end to end and the coord_check.json document (run_check, write)
Printing the tables is the command line's (harness/cli/coord_check.py).
"""
from harness.coord_check.check import (
    DEFAULT_LR,
    DEFAULT_SEEDS,
    DEFAULT_STEPS,
    DEFAULT_WIDTHS,
    FILE_NAME,
    SCHEMA,
    THRESHOLD,
    Check,
    document,
    run_check,
    write,
)
from harness.coord_check.fit import (
    QUANTITY_TEXT,
    AttentionScale,
    Record,
    Slope,
    describe_failure,
    fit_attention_scales,
    fit_decay,
    fit_slopes,
    growth_only,
    worst_failures,
)
from harness.coord_check.record import BATCH_SIZE, SEQ_LEN, Recorder, fixed_batch, measure

__all__ = [
    "BATCH_SIZE", "DEFAULT_LR", "DEFAULT_SEEDS", "DEFAULT_STEPS", "DEFAULT_WIDTHS", "FILE_NAME", "QUANTITY_TEXT",
    "SCHEMA", "SEQ_LEN", "THRESHOLD", "AttentionScale", "Check", "Record", "Recorder", "Slope", "describe_failure",
    "document", "fit_attention_scales", "fit_decay", "fit_slopes", "fixed_batch", "growth_only", "measure",
    "run_check", "worst_failures", "write",
]
