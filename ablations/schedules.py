"""Learning-rate schedules (the baseline: linear warmup, then linear decay to 1e-4 of the peak)."""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation


@ablation(reported="transfers", source=LINGLE)
def cosine_schedule(base):
    """Cosine decay instead of linear."""
    return {"train.schedule": "cosine"}


@ablation(reported="unknown", expected="transfers", source="not in the paper; MiniCPM's warmup-stable-decay")
def wsd_schedule(base):
    """Warmup–stable–decay: constant at the peak, linear decay over the last 20% of steps."""
    return {"train.schedule": "wsd"}  # decay_fraction defaults to 0.2
