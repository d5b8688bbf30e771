"""Optimizers other than AdamW, each with its μP learning-rate rule (see harness/parameterization.py), and Adam's ε."""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation

SHAH = "Shah et al. 2025, Practical Efficiency of Muon for Pretraining (arXiv 2505.02222): μP works with Muon"
EVERETT = "Everett et al. 2024, Scaling Exponents Across Parameterizations and Optimizers (arXiv 2407.05872)"


@ablation(reported="shifts", source=LINGLE)
def lion(base):
    """Lion (β 0.95/0.98) instead of AdamW, with the same μP LR scaling (α/wm on matrices); its LR grid is shifted
    down by the preset."""
    return {"train.optimizer": "lion", "train.beta1": 0.95, "train.beta2": 0.98}


@ablation(reported="transfers", source=SHAH + "; LR rule: torch.optim.Muon adjust_lr_fn='original' (Keller Jordan)")
def muon(base):
    """torch.optim.Muon (momentum 0.95, Nesterov) on the hidden matrices, AdamW on embedding, unembedding, gains and
    biases. μP-consistent rule: Muon's rate is α·0.2·√M_base, constant in width, times torch's own
    √max(1, fan_out/fan_in) (adjust_lr_fn="original"); no 1/wm on top ("double scaling"). The AdamW tensors keep μP's
    rates (unembedding α/wm)."""
    return {"train.optimizer": "muon"}


@ablation(reported="unknown", expected="transfers", source="Lingle's later code (use_eps_scaling); " + EVERETT)
def adam_eps_scaled(base):
    """Adam's ε scaled per tensor with its LR multiplier: ε/wm on the hidden matrices and the unembedding, ε on the
    rest (Lingle's later use_eps_scaling). Keeps ε below the gradients' second moment as width grows; at widths ≤ 128
    and ε = 1e-8 it should change nothing."""
    return {"train.eps_scaling": True}
