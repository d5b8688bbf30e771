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
    mean|Δx|   width-sized outputs, steps ≥ 1      |slope| ≤ threshold
    mean|Δx|   fixed-size outputs, steps ≥ 1       slope ≤ threshold    (logits, attention logits: see growth_only)
    mean|ΔW·x| every weight layer, steps ≥ 1       |slope| ≤ threshold   (and exactly 0 at every width: frozen, fails)
    attention scale, where the head dim D grows   scale ∝ D^e with |e + 1| ≤ 0.05  (μP: 1/D), read exactly
    weight decay per step lr·λ of each tensor     ∝ width^e with |e| ≤ 0.05  (μP: the same at every width), read exactly

Two-sided update bounds need coherent updates: with few tokens (a low-rank batch), Adam's update of a layer acts on
the batch's own inputs as a whole, so ΔW·x keeps its size under μP (slopes within ±0.1 below) and an LR too small by
wm (hidden LR α/wm²) shows as slope −1. With 8 × 64 tokens (the former default) part of each update is incoherent,
∝ width^-1/2, and μP's ΔW·x slopes reached −0.48. The LR is 2^-7 because at 2^-5 the first steps are already
non-linear at small widths: a correct model with an output multiplier read −0.49 ± 0.12 on its logits' ΔW·x at step 2.
The change of fixed-size outputs is growth-only: part of it is W_0·Δx summed incoherently over width, which vanishes
as width^-1/2 (logits' Δx −0.34 with an output multiplier; attention logits −0.42 where the head dim grows), while a
readout's own ΔW·x stays two-sided. The scale passed to attention tells 1/D from 1/√D exactly. Where the head dim is fixed (the
built-in model, Lingle's D = 128) the two differ by a constant, which no width scaling can show: the check reports it
and passes (the LR sweep is the test there). Attention computed by hand (softmax(q kᵀ · s)) is not intercepted; call
F.scaled_dot_product_attention to be checked.

Threshold 0.3 — a magnitude may change by at most 2^0.3 ≈ 1.23× per width doubling. Measured here (widths 64…1024,
3 steps, lr 2^-7, 2 × 16 tokens, seeds 0,1,2), the worst two-sided slope (mean over seeds ± its standard error; the
worst single seed in brackets):

    model (correct μP)                                       worst slope            quantity
    built-in (depth 2, head dim 16)                         −0.10 ± 0.02 (−0.12)   blocks.1.attn.k ΔW·x, step 1
    examples/my_model.py (4 heads, head dim grows)          −0.08 ± 0.01 (+0.10)   ΔW·x
      … output multiplier in place after a final LayerNorm  −0.09 ± 0.01 (−0.13)   ΔW·x (logits' Δx −0.34: growth only)
      … readout an nn.Linear subclass scaling its input     −0.08 ± 0.01 (+0.13)   ΔW·x (logits' Δx −0.34: growth only)
    GPT on microsoft/mup (MuReadout, MuAdamW groups)        −0.09 ± 0.04 (−0.16)   blocks.1.c_proj ΔW·x, step 3
    nanoGPT-mup style (tied, logits × α/m_d, 4 heads)       −0.18 ± 0.14 (−0.48)   mlp_proj ΔW·x / logits ΔW·x, step 3
    Cerebras style (embedding × 10, logits / m, head dim 32) −0.10 ± 0.01 (−0.12)  ΔW·x (logits' Δx −0.32: growth only)

    planted mistake (copies of examples/my_model.py)        detected as
    hidden LR α, not α/wm                                   +1.60 ± 0.02           blocks.0.attn.proj ΔW·x
    hidden LR α/wm²                                         −1.07 ± 0.01           blocks.0.mlp.up ΔW·x
    one layer's LR α/√wm (blocks.0.mlp.down)                +0.54 ± 0.01           that layer's ΔW·x (only it and its parents)
    readout SP init (width^-1/2) and LR α                   +1.01 ± 0.01           logits ΔW·x (only the logits)
    constant init std 0.05                                  +1.19 ± 0.01           mean|x| at init, blocks.1.attn.proj
    a frozen module (requires_grad False)                   ΔW·x = 0               blocks.0.mlp.up: never changes
    decay λ not scaled with the LR (lr·λ ∝ 1/wm)            exponent −1.00 (read)  every hidden layer
    attention 1/√D, head dim ∝ width                        exponent −0.50 (read)  each attention
    SP built-in / mup's SP (set_base_shapes(model, None))   +1.84 ± 0.06 / +1.74   attn.o / c_proj ΔW·x

Every correct model's mean stays within ±0.18 and every planted mistake is out by 0.54 or more, the subtlest (one
layer's LR off by √wm, expected +0.5) with a standard error of 0.01: 0.3 leaves a margin on both sides. Single seeds
are noisier (one nanoGPT-style seed reads −0.48 on the tied readout's update at step 3, where the embedding's own,
incoherent update enters it): the verdict is on the mean of 3 seeds (the two output-multiplier styles also pass on
seeds 3,4,5). Init slopes of width-sized outputs stay within ±0.13 on every correct model (mup's GPT: c_proj −0.12). microsoft/mup's own test allows a 1.2× ratio over a 4× width change (|slope| ≈ 0.13); allenai OLMo-core
asserts |slope| ≤ 0.05 on magnitudes averaged over 10 seeds. SP is the counterexample: a check under SP is expected
to fail, and one that passes says the settings cannot tell SP from μP (exit 1). Runs on one CPU thread by default
(`--threads`), so results are identical on any machine with the same torch.

    record.py   forward hooks, own-update forwards and attention interception over a few steps (Recorder, measure)
    fit.py      slopes per module, quantity, step and seed; attention scale and weight-decay exponents; pass/fail
    check.py    one check end to end and the coord_check.json document (run_check, write)
Printing the tables is the command line's (harness/cli/coord_check.py).
"""
from mupbench.coord_check.check import (
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
from mupbench.coord_check.fit import (
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
from mupbench.coord_check.record import BATCH_SIZE, SEQ_LEN, Recorder, fixed_batch, measure

__all__ = [
    "BATCH_SIZE", "DEFAULT_LR", "DEFAULT_SEEDS", "DEFAULT_STEPS", "DEFAULT_WIDTHS", "FILE_NAME", "QUANTITY_TEXT",
    "SCHEMA", "SEQ_LEN", "THRESHOLD", "AttentionScale", "Check", "Record", "Recorder", "Slope", "describe_failure",
    "document", "fit_attention_scales", "fit_decay", "fit_slopes", "fixed_batch", "growth_only", "measure",
    "run_check", "worst_failures", "write",
]
