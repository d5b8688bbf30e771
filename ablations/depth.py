"""Depth × LR sweeps: the three depth rules of harness/parameterization.py, at a fixed width, μP in width.

Each ablation sets `model.depth_parameterization`; the depth grid (the preset's `depths`, or --depths) and the base
depth (the smallest depth of the grid, where every rule is 1) come from the sweep. The expected verdicts follow the
papers: without branch scaling the residual stream and its updates grow with depth, and the optimal LR falls as the
model deepens. Scaling the branches by L^-α with the matching Adam LR keeps it in place for α = 1 (CompleteP); for
α = 1/2 (Depth-μP) Tensor Programs VI finds no good infinite-depth limit once a block holds two or more layers (a
transformer MLP does), and Dey et al. 2025 find the optimum moving with depth in pre-LN transformers — this project's
cpu-tiny depth sweep agrees in direction (+0.33 [+0.10, +0.56] per depth doubling, 3 seeds).
"""
from mupbench.ablations.registry import ablation

BORDELON = "Bordelon et al. 2023, Depthwise Hyperparameter Transfer in Residual Networks (arXiv 2309.16620)"
YANG_TP6 = "Yang et al. 2023, Tensor Programs VI: Feature Learning in Infinite-Depth Neural Networks (arXiv 2310.02244)"
COMPLETEP = "Dey et al. 2025, Don't be lazy: CompleteP enables compute-efficient deep transformers (arXiv 2505.01618)"


@ablation(reported="shifts", axis="depth", family="depth",
          source=f"{BORDELON}; {COMPLETEP} (SP and μP without depth scaling: the optimum moves with depth)")
def depth_standard(base):
    """No depth scaling: every block adds its branch unscaled (μP in width only)."""
    return {"model.depth_parameterization": "standard"}


@ablation(reported="shifts", axis="depth", family="depth",
          source=f"{COMPLETEP} (α = 1/2 does not transfer in pre-LN transformers); {YANG_TP6} (no good depth limit "
                 f"for blocks of two or more layers); Depth-μP as in {BORDELON}")
def depth_mup(base):
    """Depth-μP: branches × (L/L_base)^-1/2, block LRs and Adam ε × (L/L_base)^-1/2."""
    return {"model.depth_parameterization": "depth_mup"}


@ablation(reported="transfers", axis="depth", family="depth", source=COMPLETEP + " (α = 1)")
def completep(base):
    """CompleteP: branches × (L/L_base)^-1, block LRs unchanged, in-block Adam ε × (L/L_base)^-1."""
    return {"model.depth_parameterization": "completep"}
