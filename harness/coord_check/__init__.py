"""Coordinate check: do activation updates keep their size as the model gets wider, after a few large-LR steps?

The fast first line of the gate (microsoft/mup's check, made pass/fail). For each width (default 64…1024), seed torch,
build the model, and take `steps` AdamW steps (default 3) at a deliberately large base LR (2^-5) on one fixed batch
(8 × 64 bytes of text, the same at every width). Before each step, record for every module's output x_t (embedding,
projections, each block's attention and MLP, norms, the logits — forward hooks on every module) mean|x_t| and
mean|x_t − x_0|, and for nn.Linear / nn.Embedding modules mean|(W_t − W_0)·x_t|, the part of the change the layer's
own weight update makes. Every F.scaled_dot_product_attention call is intercepted too: its logits q·k·scale are
recorded as "<module>.attn_logits", and the scale it was given is kept.

Per module, quantity and step t ≥ 1 the check fits the slope of log2 magnitude against log2 width (log2 magnitude per
width doubling). μP keeps updates Θ(1): slope ≈ 0. Getting one μP rule wrong makes them grow — an LR of α instead of
α/wm on a matrix or the readout makes that layer's update ∝ width, slope ≈ +1 — so the check passes when

    mean|Δx|  (every module)                      |slope| ≤ threshold      (both directions: growth and vanishing)
    mean|ΔW·x| (weight layers), attention logits  slope ≤ threshold        (growth only; see below)
    attention scale, where the head dim D grows   scale ∝ D^e with |e + 1| ≤ 0.05  (μP: 1/D)

Growth only, because at widths a CPU can run the μP expectation for these is a *negative* slope that tends to 0: with
a batch whose rank is comparable to the width, part of a layer's own update (and of q·k/D) is incoherent, ∝ width^-1/2.
Measured on the example model, attention logits' Δ slopes run from −0.9 to −0.1 under μP.

The attention scale is read, not inferred from magnitudes: with the head dim growing (heads fixed), 1/√D instead of 1/D
multiplies the logits' update by √D — +0.5 per doubling on top of μP's negative finite-width slope, which at these
widths lands at +0.30…+0.34, inside the noise of the magnitudes. Reading the scale passed to attention tells 1/D from
1/√D exactly, at any width. Where the head dim is fixed (the built-in model, Lingle's D = 128) the two differ by a
constant factor, which no width scaling can show: the check reports it and passes (the LR sweep is the test there).
Attention computed by hand (softmax(q kᵀ · s)) is not intercepted; call F.scaled_dot_product_attention to be checked.

Threshold 0.5 — a magnitude may change by at most 2^0.5 ≈ 1.41× per width doubling. Measured here (3 steps,
lr 2^-5, the default batch), the worst slope over every module, step and quantity of a run:

    model                                   widths       seeds  worst slope (quantity)
    μP built-in (depth 2, head dim 16)      64…1024      0,1,2  0.11  0.34  0.18   (logits ΔW·x at step 1 is the noisiest)
    μP examples/my_model.py                 64…1024      0,1,2  0.09  0.12  0.28
                                            64…512       0…3    0.17  0.15  0.36  0.22
                                            32…256       0      0.18
    SP built-in                             64…1024      0,1,2  2.16  2.20  2.32   (blocks.0.attn.o)
    SP examples/my_model.py                 64…1024      0,1,2  2.10  2.21  2.01
    (a) hidden LR α, not α/wm               64…1024      0,1,2  2.29  2.21  2.34   (attn.proj, mlp.down)
    (b) readout SP init and LR α            64…1024      0,1,2  0.89  1.07  1.10   (logits ΔW·x at step 1)
                                            64…512       0…3    1.09  1.12  1.11  1.08
    (c) attention 1/√D, head dim ∝ width    64…1024      0,1,2  scale exponent −0.50 (magnitudes: 0.31…0.34)

Every μP run stays below 0.36 and every planted LR/init mistake is above 0.89: 0.5 leaves a margin on both sides
(microsoft/mup's own test allows a 1.2× ratio over a 4× width change, |slope| ≈ 0.13; allenai OLMo-core asserts
|slope| ≤ 0.05 on magnitudes averaged over 10 seeds — single-seed slopes at CPU widths are noisier than that). μP's
Δx slopes alone stay within ±0.22. SP is the counterexample: a check under SP is expected to fail, and one that passes
says the settings cannot tell SP from μP (exit 1). Runs on one CPU thread by default (`--threads`), so results are
identical on any machine with the same torch.

    record.py   forward hooks and attention interception over a few steps (Recorder, measure)
    fit.py      slopes per module, quantity and step; the attention scale's exponent; pass/fail (fit_slopes)
    check.py    one check end to end and the coord_check.json document (run_check, write)
Printing the tables is the command line's (harness/cli/coord_check.py).
"""
from harness.coord_check.check import (
    DEFAULT_LR,
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
    fit_slopes,
    growth_only,
    worst_failures,
)
from harness.coord_check.record import Recorder, fixed_batch, measure

__all__ = [
    "DEFAULT_LR", "DEFAULT_STEPS", "DEFAULT_WIDTHS", "FILE_NAME", "QUANTITY_TEXT", "SCHEMA", "THRESHOLD",
    "AttentionScale", "Check", "Record", "Recorder", "Slope", "describe_failure", "document", "fit_attention_scales",
    "fit_slopes", "fixed_batch", "growth_only", "measure", "run_check", "worst_failures", "write",
]
