import pytest
import torch

from mupbench import ModelConfig, build_model
from mupbench.errors import UserError
from mupbench.optim import schedule


@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"activation": "gelu"},
        {"activation": "swiglu"},
        {"activation": "squared_relu"},
        {"norm_gains": "scalar"},
        {"norm_gains": "vector", "projection_biases": True, "embedding_norm": True},
        {"kv_heads": 1},
        {"kv_heads": 2, "attention_scale": "inv_sqrt_d"},
    ],
)
def test_forward_shapes_and_causality(switches):
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=64, depth=2, head_dim=16, vocab_size=100, base_width=32, **switches))
    tokens = torch.randint(0, 100, (2, 12))
    logits = model(tokens)
    assert logits.shape == (2, 12, 100)
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 100
    # A later token never changes an earlier position's logits.
    assert torch.allclose(model(changed)[:, :8], logits[:, :8], atol=1e-5)
    assert not torch.allclose(model(changed)[:, 8:], logits[:, 8:])


def test_swiglu_keeps_parameter_count_close():
    relu = build_model(ModelConfig(width=96, head_dim=16))
    glu = build_model(ModelConfig(width=96, head_dim=16, activation="swiglu"))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(n(glu) - n(relu)) / n(relu) < 0.01


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"width": 30, "head_dim": 16}, "not divisible by head_dim"),
        ({"width": 64, "kv_heads": 3, "head_dim": 16}, "must divide"),
        ({"width": 64, "activation": "tanh"}, "activation"),
    ],
)
def test_bad_configs_raise_user_errors(kw, message):
    with pytest.raises(UserError, match=message):
        ModelConfig(**kw)


def test_schedules():
    lin = [schedule(t, 100, 10, "linear") for t in range(100)]
    assert lin[0] == pytest.approx(1e-4) and lin[10] == pytest.approx(1.0) and lin[99] == pytest.approx(1e-4)
    assert all(b <= a for a, b in zip(lin[10:], lin[11:]))
    cos = [schedule(t, 100, 10, "cosine") for t in range(100)]
    assert cos[10] == pytest.approx(1.0) and cos[99] == pytest.approx(1e-4) and cos[30] > lin[30] and cos[80] < lin[80]
    wsd = [schedule(t, 100, 10, "wsd", decay_fraction=0.2) for t in range(100)]
    assert all(v == 1.0 for v in wsd[10:80]) and wsd[99] == pytest.approx(1e-4) and wsd[90] < 1
