"""Attention logit scale and key/value head sharing."""
import math

from mupbench.ablations.baseline import LINGLE
from mupbench.ablations.registry import ablation

PAPER_HEAD_DIM = 128  # Lingle's head dim: μP's 1/D there is 1/128, SP's 1/√D is √128 ≈ 11.3× larger


@ablation(reported="shifts", source=LINGLE + " (best LR 2^-8 at width 128 vs 2^-6 wider)")
def sp_attention_scale(base):
    """Attention logits × √128 ≈ 11.3 on top of μP's 1/D: the paper's SP/μP ratio (1/√D vs 1/D at D = 128) at any head
    dim, through an explicit logit multiplier. At D = 128 this is exactly 1/√D; at cpu-tiny's D = 16 it is 11.3×, where
    1/√16 would be 4×. For the paper's head layout (head dim = base width, heads grow with width) use a *-paper-heads
    preset."""
    return {"model.attention_logit_mult": math.sqrt(PAPER_HEAD_DIM)}


@ablation(reported="transfers", source=LINGLE + " (the paper also raised the MLP multiple to 5; not done here)")
def multi_query_attention(base):
    """Multi-query attention: one K/V head shared by every query head."""
    return {"model.kv_heads": 1}
