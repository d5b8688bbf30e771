"""Optimizers other than AdamW, with the same μP learning-rate scaling (α/wm on matrices)."""
from ablations.baseline import LINGLE
from ablations.registry import ablation


@ablation(reported="shifts", source=LINGLE)
def lion(base):
    """Lion (β 0.95/0.98) instead of AdamW; its LR grid is shifted down by the preset."""
    return {"train.optimizer": "lion", "train.beta1": 0.95, "train.beta2": 0.98}
