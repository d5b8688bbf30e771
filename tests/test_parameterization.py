"""Each parameterization rule, at two widths: dropping one 1/width anywhere fails a test here."""
import math

import pytest
import torch

from harness import ModelConfig, build_model, build_optimizer
from harness.model import parameter_roles
from harness.parameterization import HIDDEN_ROLES, init_std, lr_mult

BASE = 32


def cfg(width, param="mup", **kw):
    return ModelConfig(width=width, depth=2, head_dim=16, base_width=BASE, parameterization=param, **kw)


@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("role", HIDDEN_ROLES)
def test_mup_hidden_matrices(width, role):
    c = cfg(width)
    assert init_std(c, role, fan_in=width) == pytest.approx(width**-0.5)
    assert lr_mult(c, role) == pytest.approx(BASE / width)


@pytest.mark.parametrize("width", [64, 256])
def test_mup_ff_out_uses_its_own_fan_in(width):
    c = cfg(width)
    assert init_std(c, "ff_out", fan_in=4 * width) == pytest.approx((4 * width) ** -0.5)


@pytest.mark.parametrize("width", [64, 256])
def test_mup_unembedding(width):
    c = cfg(width)
    assert init_std(c, "unembedding", fan_in=width) == pytest.approx(1 / width)
    assert lr_mult(c, "unembedding") == pytest.approx(BASE / width)


@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("param", ["mup", "sp"])
def test_embedding_gain_bias_keep_base_lr(width, param):
    c = cfg(width, param)
    assert init_std(c, "embedding", fan_in=256) == 1.0
    for role in ("embedding", "gain", "bias"):
        assert lr_mult(c, role) == 1.0


@pytest.mark.parametrize("width", [64, 256])
@pytest.mark.parametrize("role", HIDDEN_ROLES + ("unembedding",))
def test_sp_single_global_lr_and_fan_in_init(width, role):
    c = cfg(width, "sp")
    assert lr_mult(c, role) == 1.0
    assert init_std(c, role, fan_in=width) == pytest.approx(width**-0.5)


def test_switches_override_init():
    assert init_std(cfg(64, query_init="zero"), "attn_q", 64) == 0.0
    assert init_std(cfg(64, unembedding_init="sp"), "unembedding", 64) == pytest.approx(64**-0.5)
    assert init_std(cfg(64, unembedding_init="zero"), "unembedding", 64) == 0.0
    assert init_std(cfg(64, "sp", unembedding_init="mup"), "unembedding", 64) == pytest.approx(1 / 64)


def test_base_width_sets_width_mult():
    c = ModelConfig(width=512, head_dim=64, base_width=128)
    assert lr_mult(c, "attn_o") == pytest.approx(0.25)


def test_every_parameter_has_a_role_with_the_right_fan_in():
    model = build_model(cfg(64, norm_gains="vector", projection_biases=True, embedding_norm=True, activation="swiglu"))
    roles = {name: (role, fan_in) for name, _, role, fan_in in parameter_roles(model)}
    assert roles["embed.weight"][0] == "embedding"
    assert roles["unembed.weight"] == ("unembedding", 64)
    assert roles["blocks.0.attn.q.weight"] == ("attn_q", 64)
    assert roles["blocks.0.attn.q.bias"][0] == "bias"
    assert roles["blocks.1.mlp.fc_out.weight"] == ("ff_out", model.cfg.ff_width)
    assert roles["final_norm.weight"][0] == "gain"
    assert roles["embed_norm.weight"][0] == "gain"
    assert len(roles) == len(list(model.parameters()))


@pytest.mark.parametrize("width", [64, 256])
def test_measured_init_statistics(width):
    torch.manual_seed(0)
    model = build_model(cfg(width, norm_gains="vector", projection_biases=True))
    p = dict(model.named_parameters())

    def std(name):
        return p[name].float().std().item()

    assert std("embed.weight") == pytest.approx(1.0, rel=0.05)
    assert std("blocks.0.attn.k.weight") == pytest.approx(width**-0.5, rel=0.05)
    assert std("blocks.0.mlp.fc_out.weight") == pytest.approx((4 * width) ** -0.5, rel=0.05)
    assert std("unembed.weight") == pytest.approx(1 / width, rel=0.05)
    assert torch.all(p["final_norm.weight"] == 1) and torch.all(p["blocks.0.attn.q.bias"] == 0)


def test_zero_query_init_builds_zero_matrix():
    model = build_model(cfg(64, query_init="zero"))
    assert all(torch.all(b.attn.q.weight == 0) for b in model.blocks)


@pytest.mark.parametrize("param,expected", [("mup", BASE / 128), ("sp", 1.0)])
def test_optimizer_groups_carry_per_tensor_lrs(param, expected):
    model = build_model(cfg(128, param, norm_gains="vector"))
    opt = build_optimizer(model, lr=0.01)
    by_name = {n: g["lr"] for g in opt.param_groups for n in g["names"]}
    assert by_name["blocks.0.attn.v.weight"] == pytest.approx(0.01 * expected)
    assert by_name["unembed.weight"] == pytest.approx(0.01 * expected)
    assert by_name["embed.weight"] == pytest.approx(0.01)
    assert by_name["final_norm.weight"] == pytest.approx(0.01)


def test_weight_decay_forms():
    model = build_model(cfg(128, norm_gains="vector"))
    coupled = build_optimizer(model, lr=0.01, weight_decay=0.1, weight_decay_mode="coupled")
    indep = build_optimizer(model, lr=0.01, weight_decay=1e-4, weight_decay_mode="independent")
    for g in coupled.param_groups:
        assert g["weight_decay"] == (0.0 if "gain" in g["roles"] else 0.1)
    for g in indep.param_groups:
        if "gain" not in g["roles"]:  # the effective per-step decay lr·wd is λ whatever the tensor's LR
            assert g["lr"] * g["weight_decay"] == pytest.approx(1e-4)


def test_lion_optimizer_uses_same_lr_scaling():
    model = build_model(cfg(128))
    opt = build_optimizer(model, lr=1e-3, optimizer="lion")
    assert type(opt).__name__ == "Lion"
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == pytest.approx([1e-3 * BASE / 128, 1e-3])


def test_attention_scale_switch():
    m = build_model(cfg(64))
    assert m.blocks[0].attn.scale == pytest.approx(1 / 16)
    m = build_model(cfg(64, attention_scale="inv_sqrt_d"))
    assert m.blocks[0].attn.scale == pytest.approx(1 / math.sqrt(16))
