"""Batch size at a fixed token budget: steps and warmup scale inversely with the batch."""
from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation


def _scale_batch(base, factor: float) -> dict:
    train = base["train"]
    return {
        "train.batch_size": max(1, round(train["batch_size"] * factor)),
        "train.steps": max(1, round(train["steps"] / factor)),
        "train.warmup": round(train["warmup"] / factor),
    }


@ablation(reported="transfers", source=LINGLE)
def batch_4x(base):
    """4× sequences per batch, 1/4 the steps and warmup (same tokens)."""
    return _scale_batch(base, 4)


@ablation(reported="transfers", source=LINGLE)
def batch_quarter(base):
    """1/4 the sequences per batch, 4× the steps and warmup (same tokens)."""
    return _scale_batch(base, 0.25)
