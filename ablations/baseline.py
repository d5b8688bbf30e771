"""The μP baseline, full standard parameterization, and projection biases."""
from mupbench.ablations.registry import ablation

LINGLE = "Lingle 2024, A Large-Scale Exploration of μ-Transfer (arXiv 2404.05728)"


@ablation(reported="transfers", source=LINGLE, family="baseline")
def baseline(base):
    """μP as defined by the parameterization table: nothing changed."""
    return {}


@ablation(reported="shifts", source=LINGLE + ", 'full SP' row", family="baseline")
def standard_parameterization(base):
    """Full SP: SP init and one global LR, 1/sqrt(D) attention, SP unembedding init, vector gains and biases on (the
    unembedding's included)."""
    return {
        "model.parameterization": "sp",
        "model.attention_scale": "inv_sqrt_d",
        "model.norm_gains": "vector",
        "model.projection_biases": True,
        "model.unembedding_bias": True,
    }


@ablation(reported="transfers", source=LINGLE, family="baseline")
def projection_biases(base):
    """Biases on every linear projection, the unembedding included (Lingle's b_u), zero init, LR α."""
    return {"model.projection_biases": True, "model.unembedding_bias": True}


@ablation(reported="unknown", expected="shifts",
          source="control for μP's embedding rule (Kalra & Barkeshli attribute much of μP's advantage to it); "
                 "μP predicts a shift: the embedding's updates vanish as 1/wm", family="baseline")
def embedding_lr_scaled(base):
    """Embedding LR α/wm instead of μP's α (everything else μP): the control that separates μP's embedding rule from
    its hidden-matrix and unembedding rules."""
    return {"model.embedding_lr": "inv_wm"}
