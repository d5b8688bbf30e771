"""RMSNorm gains and normalisation of the embedding."""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation


@ablation(reported="shifts", source=LINGLE)
def rmsnorm_gains_vector(base):
    """Learnable per-channel RMSNorm gains (init 1, LR α)."""
    return {"model.norm_gains": "vector"}


@ablation(reported="shifts", source=LINGLE)
def rmsnorm_gains_scalar(base):
    """One learnable scalar gain per RMSNorm (init 1, LR α)."""
    return {"model.norm_gains": "scalar"}


@ablation(reported="transfers", source=LINGLE)
def embedding_normalization(base):
    """RMSNorm applied to the embedding output."""
    return {"model.embedding_norm": True}
