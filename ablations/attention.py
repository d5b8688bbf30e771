"""Attention logit scale and key/value head sharing."""
from ablations.baseline import LINGLE
from ablations.registry import ablation


@ablation(reported="shifts", source=LINGLE + " (best LR 2^-8 at width 128 vs 2^-6 wider)")
def sp_attention_scale(base):
    """Attention logits scaled by 1/sqrt(D) instead of μP's 1/D."""
    return {"model.attention_scale": "inv_sqrt_d"}


@ablation(reported="transfers", source=LINGLE + " (the paper also raised the MLP multiple to 5; not done here)")
def multi_query_attention(base):
    """Multi-query attention: one K/V head shared by every query head."""
    return {"model.kv_heads": 1}
