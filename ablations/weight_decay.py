"""Weight decay in three forms, each set by its AdamW timescale relative to the run rather than by a fixed λ.

What sets weight decay's strength is the EMA timescale τ = 1/(η·λ) steps of AdamW (η the tensor's rate, λ the decay)
relative to the run (Wang & Aitchison 2025, "How to set AdamW's weight decay as you scale model and dataset size").
Over a run with schedule s(t) a tensor's decay exposure is E = Σ_t s(t)·η·λ = T_eff/τ, with T_eff = Σ_t s(t) the
run's length in peak-LR steps:

    linear, cosine   T_eff = S_W + (T − W)·(1 + f)/2                 ≈ T/2
    wsd              T_eff = S_W + (T − W − D) + D·(1 + f)/2         ≈ T − W/2 − D/2
    (T steps, W warmup steps, f = final_lr_fraction, D = max(1, round(decay_fraction·T)) decay steps,
     S_W = W·f + (W − 1)·(1 − f)/2 the warmup's sum; each is Σ_t s(t) of harness/optim.py's schedule)

The decay ablations choose λ so that E = EXPOSURE (= 4, τ = T_eff/4) at the base width at the reference rate
α_ref = 2^-5 (the μP baseline's optimum at cpu-tiny). The three forms then coincide at the base width and α_ref and
differ only in how E moves with width (wm = width/base width) and with α:

    form                 per-step decay     λ                      E at width, α
    coupled              s·α·mult·λ·p       4 / (α_ref·T_eff)      4·(α/α_ref)·mult  (4·(α/α_ref)/wm on α/wm tensors)
    independent          s·λ·p              4 / T_eff              4                (every width, every α)
    mup_adamw (MuAdam)   s·α·λ·p            4 / (α_ref·T_eff)      4·(α/α_ref)       (every width)

With E = 4 at width 32 falling to 1 at width 128, coupled decay crosses τ ≈ T_eff inside cpu-tiny's widths — where
its width dependence can show. Lingle's values (coupled λ = 0.1, independent λ = 1e-4) over a 300-step run give
E ≈ 0.47 and 0.015: no decay to speak of. All three decay every tensor (gains and biases too), as Lingle's optimizer
(optax.adamw, no mask) does; `train.weight_decay_tensors="matrices"` is the common-practice alternative.
"""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation

EXPOSURE = 4.0  # T_eff / τ at the base width and α_ref
ALPHA_REF = 2.0**-5  # the μP baseline's optimum at cpu-tiny (reports/sweeps/lingle-cpu-tiny: −5.0 … −5.2)
WANG_AITCHISON = "Wang & Aitchison 2025, How to set AdamW's weight decay as you scale model and dataset size"


def effective_steps(train: dict) -> float:
    """T_eff = Σ_t s(t): the run's length in steps at the peak rate (the module docstring's formulas)."""
    steps, warmup, floor = train["steps"], train["warmup"], train["final_lr_fraction"]
    warm = warmup * floor + (warmup - 1) * (1 - floor) / 2 if warmup else 0.0
    if train["schedule"] == "wsd":
        decay = steps - max(warmup, steps - max(1, round(train["decay_fraction"] * steps)))
        return warm + (steps - warmup - decay) + decay * (1 + floor) / 2
    return warm + (steps - warmup) * (1 + floor) / 2


def _decay(mode: str, lam: float) -> dict:
    """λ to 4 significant digits (readable in `mupbench list`); the mode unless it is the default, coupled."""
    out = {"train.weight_decay": float(f"{lam:.4g}"), "train.weight_decay_tensors": "all"}
    return out if mode == "coupled" else {**out, "train.weight_decay_mode": mode}


@ablation(reported="shifts", source=LINGLE + " (λ = 0.1, exposure ≈ 98 at width 128; 'the optima differ a little')")
def weight_decay_coupled(base):
    """Coupled AdamW decay s·α·mult·λ·p (Lingle's form; under μP it shrinks as 1/wm on matrices): λ = 4/(α_ref·T_eff),
    τ = T_eff/4 at the base width and α_ref = 2^-5, T_eff/τ = 4/wm at wider widths; decays every tensor, gains and
    biases included (Lingle's optimizer)."""
    return _decay("coupled", EXPOSURE / (ALPHA_REF * effective_steps(base["train"])))


@ablation(reported="unknown", expected="transfers",
          source="swept in Lingle's later code (λ 1e-3…1e-5, exposure 62.5…0.6); verdict not published")
def weight_decay_independent(base):
    """Independent decay s·λ·p, the same at every width and LR: λ = 4/T_eff, so τ = T_eff/4 everywhere; decays every
    tensor, gains and biases included (Lingle's optimizer)."""
    return _decay("independent", EXPOSURE / effective_steps(base["train"]))


@ablation(reported="unknown", expected="transfers",
          source="microsoft/mup MuAdam (λ·width_mult, so lr·λ is fixed across widths); " + WANG_AITCHISON)
def weight_decay_mup_adamw(base):
    """MuAdam's decay: torch AdamW with weight_decay λ·wm on every α/wm tensor, i.e. s·α·λ·p at every width:
    λ = 4/(α_ref·T_eff), so T_eff/τ = 4 at α_ref whatever the width; decays every tensor, gains and biases included
    (Lingle's optimizer)."""
    return _decay("mup_adamw", EXPOSURE / (ALPHA_REF * effective_steps(base["train"])))
