"""MLP activation functions."""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation


@ablation(reported="transfers", source=LINGLE)
def swiglu(base):
    """SwiGLU MLP; each branch 2/3 of the ReLU hidden size (8/3·width) so parameters stay ≈ equal."""
    return {"model.activation": "swiglu"}


@ablation(reported="transfers", source=LINGLE)
def squared_relu(base):
    """Squared ReLU (ReLU²) activation."""
    return {"model.activation": "squared_relu"}


@ablation(reported="unknown", expected="transfers", source="not in the paper; an elementwise activation like ReLU")
def gelu(base):
    """GELU activation."""
    return {"model.activation": "gelu"}
