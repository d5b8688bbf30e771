"""Weight decay, coupled to the per-tensor LR or independent of it (see harness/optim.py for the two forms)."""
from ablations.baseline import LINGLE
from ablations.registry import ablation


@ablation(reported="shifts", source=LINGLE)
def weight_decay_coupled(base):
    """AdamW decay λ = 0.1 applied as lr_tensor·λ·p (shrinks with width under μP)."""
    return {"train.weight_decay": 0.1}  # the default form is coupled


@ablation(reported="unknown", expected="transfers", source="swept in Lingle's later code; verdict not published")
def weight_decay_independent(base):
    """Decay λ·s(t)·p independent of the tensor's LR (λ = 1e-4)."""
    return {"train.weight_decay": 1e-4, "train.weight_decay_mode": "independent"}
