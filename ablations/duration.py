"""Duration × LR sweeps: does the optimal LR stay put as training gets longer? It is not expected to.

Bjorck et al. (ICLR 2025, "Scaling Optimal LR Across Token Horizons") find the optimal LR falls as the token horizon
grows, LR*(D) ≈ B·D^-β: a μP-tuned LR does not transfer across training length, in μP or SP. The sweep trains each LR
with warmup–stable–decay, so the runs of every length share their stable phase: one run per LR branches its decays off
stored checkpoints (harness/branches.py), and every length costs only its decay.
"""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation

BJORCK = "Bjorck et al., ICLR 2025, Scaling Optimal LR Across Token Horizons (arXiv 2409.19913)"


@ablation(reported="shifts", axis="duration", family="duration", source=f"{BJORCK}; WSD as in MiniCPM; {LINGLE} (model)")
def wsd_duration(base):
    """Warmup–stable–decay (linear decay over the last 20% of steps) at every training length of the duration grid."""
    return {"train.schedule": "wsd"}
