"""Initialisation of the query projection and the unembedding."""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation


@ablation(reported="transfers", source=LINGLE)
def zero_query_init(base):
    """W_q initialised to zero (attention starts uniform)."""
    return {"model.query_init": "zero"}


@ablation(reported="transfers", source=LINGLE)
def sp_unembedding_init(base):
    """Unembedding init std width^-1/2 (SP) instead of 1/width; LR unchanged."""
    return {"model.unembedding_init": "sp"}


@ablation(reported="unknown", expected="transfers", source="not in the paper's table; microsoft/mup README recommends it")
def zero_unembedding_init(base):
    """Unembedding initialised to zero."""
    return {"model.unembedding_init": "zero"}
