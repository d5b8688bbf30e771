"""Each parameterization rule, at two widths: dropping one 1/width anywhere fails a test here."""
import math

import pytest
import torch

from mupbench import ModelConfig, build_model, build_optimizer
from mupbench.model import parameter_roles
from mupbench.parameterization import HIDDEN_ROLES, init_std, lr_mult

BASE = 32


def cfg(width, param="mup", **kw):
    kw.setdefault("depth", 2)
    return ModelConfig(width=width, head_dim=16, base_width=BASE, parameterization=param, **kw)


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


@pytest.mark.parametrize("width", [64, 256])
def test_weight_decay_per_step_coefficient_of_each_form(width):
    """lr·wd per tensor: coupled α·mult·λ (shrinks as 1/wm on matrices), independent λ, MuAdam α·λ at every width."""
    alpha, lam = 0.01, 0.5
    model = build_model(cfg(width, norm_gains="vector", projection_biases=True, unembedding_bias=True))
    for mode, expected in (("coupled", lambda mult: alpha * mult * lam), ("independent", lambda mult: lam),
                           ("mup_adamw", lambda mult: alpha * lam)):
        opt = build_optimizer(model, lr=alpha, weight_decay=lam, weight_decay_mode=mode, weight_decay_tensors="all")
        by_name = {n: g for g in opt.param_groups for n in g["names"]}
        for name in ("blocks.0.attn.o.weight", "unembed.weight", "embed.weight", "final_norm.weight", "unembed.bias"):
            g = by_name[name]
            assert g["lr"] * g["weight_decay"] == pytest.approx(expected(g["lr_mult"])), (mode, name)
    # MuAdam's form in microsoft/mup's words: weight_decay × width_mult on the α/wm tensors
    opt = build_optimizer(model, lr=alpha, weight_decay=lam, weight_decay_mode="mup_adamw")
    by_name = {n: g for g in opt.param_groups for n in g["names"]}
    assert by_name["blocks.1.mlp.fc_in.weight"]["weight_decay"] == pytest.approx(lam * width / BASE)


def test_which_tensors_decay_is_explicit():
    model = build_model(cfg(64, norm_gains="vector", projection_biases=True, unembedding_bias=True))
    for tensors, gains_and_biases_decay in (("matrices", False), ("all", True)):
        opt = build_optimizer(model, lr=0.01, weight_decay=0.1, weight_decay_tensors=tensors)
        by_name = {n: g["weight_decay"] for g in opt.param_groups for n in g["names"]}
        assert by_name["embed.weight"] == by_name["blocks.0.attn.q.weight"] == by_name["unembed.weight"] == 0.1
        for name in ("final_norm.weight", "blocks.0.attn.q.bias", "unembed.bias"):
            assert (by_name[name] > 0) == gains_and_biases_decay, (tensors, name)


@pytest.mark.parametrize("width", [64, 256])
def test_adam_eps_scales_with_the_lr_multiplier(width):
    model = build_model(cfg(width, norm_gains="vector"))
    opt = build_optimizer(model, lr=0.01, eps=1e-8, eps_scaling=True)
    eps = {n: g["eps"] for g in opt.param_groups for n in g["names"]}
    for name in ("blocks.0.attn.k.weight", "blocks.0.mlp.fc_out.weight", "unembed.weight"):
        assert eps[name] == pytest.approx(1e-8 * BASE / width)
    assert eps["embed.weight"] == eps["final_norm.weight"] == pytest.approx(1e-8)
    plain = build_optimizer(model, lr=0.01, eps=1e-8)
    assert {g["eps"] for g in plain.param_groups} == {1e-8}


@pytest.mark.parametrize("width", [64, 256])
def test_embedding_lr_switch(width):
    assert lr_mult(cfg(width, embedding_lr="inv_wm"), "embedding") == pytest.approx(BASE / width)
    assert lr_mult(cfg(width), "embedding") == 1.0
    for role in HIDDEN_ROLES + ("unembedding",):  # nothing else moves
        assert lr_mult(cfg(width, embedding_lr="inv_wm"), role) == lr_mult(cfg(width), role)


def test_unembedding_bias_is_a_bias():
    model = build_model(cfg(64, unembedding_bias=True))
    roles = {name: role for name, _, role, _ in parameter_roles(model)}
    assert roles["unembed.bias"] == "bias" and torch.all(model.unembed.bias == 0)
    opt = build_optimizer(model, lr=0.01)
    assert {n: g["lr"] for g in opt.param_groups for n in g["names"]}["unembed.bias"] == pytest.approx(0.01)
    assert build_model(cfg(64)).unembed.bias is None


# --- Muon -----------------------------------------------------------------------------------------------------------
def _muon_step_spectral_norms(width: int, alpha: float = 2**-6) -> dict[str, float]:
    """The spectral norm of one Muon step's ΔW for a square and a 4:1 hidden matrix at `width`."""
    torch.manual_seed(0)
    model = build_model(cfg(width, depth=1))
    opt = build_optimizer(model, lr=alpha, optimizer="muon")
    tokens = torch.randint(0, 256, (4, 33))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    opt.step()
    after = dict(model.named_parameters())
    return {n: torch.linalg.matrix_norm((after[n] - before[n]).float(), ord=2).item()
            for n in ("blocks.0.attn.o.weight", "blocks.0.mlp.fc_in.weight")}


def test_muon_lr_rule_is_constant_in_width_and_uses_torchs_original_shape_factor():
    """μP for Muon: its update already has spectral norm ≈ lr·√max(1, fan_out/fan_in) at every width, so the hidden
    matrices' multiplier must not carry μP's 1/wm ("double scaling"); the AdamW tensors keep μP's rules."""
    for width in (64, 256):
        c = cfg(width)
        for role in HIDDEN_ROLES:
            assert lr_mult(c, role, "muon") == pytest.approx(0.2 * BASE**0.5)
        assert lr_mult(c, "unembedding", "muon") == pytest.approx(BASE / width)
        assert lr_mult(c, "embedding", "muon") == 1.0
        opt = build_optimizer(build_model(c), lr=0.01, optimizer="muon")
        kinds = {n: (type(o).__name__, g) for o in opt.optimizers for g in o.param_groups for n in g["names"]}
        assert kinds["blocks.0.attn.q.weight"][0] == "Muon" and kinds["blocks.0.attn.q.weight"][1]["adjust_lr_fn"] == "original"
        assert kinds["blocks.0.mlp.fc_out.weight"][0] == "Muon"
        assert kinds["embed.weight"][0] == kinds["unembed.weight"][0] == "AdamW"


def test_muon_update_size_does_not_shrink_with_width():
    """The behaviour the rule is for: one Muon step moves a hidden matrix by the same spectral norm at width 64 and
    256. Double scaling (× 1/wm on top of Muon's own factor) makes it 4× smaller at 256; Moonshot's
    `match_rms_adamw` factor alone makes it 2× larger."""
    small, large = _muon_step_spectral_norms(64), _muon_step_spectral_norms(256)
    for name in small:
        assert 0.75 < large[name] / small[name] < 1.33, (name, small[name], large[name])
    # and its size is the rule's: α·0.2·√M_base·√max(1, fan_out/fan_in) × NS singular values (≈ 0.5–1.5)
    expected = 2**-6 * 0.2 * BASE**0.5
    assert 0.4 * expected < small["blocks.0.attn.o.weight"] < 1.6 * expected
    assert 0.4 * 2 * expected < small["blocks.0.mlp.fc_in.weight"] < 1.6 * 2 * expected


def test_muon_schedules_and_zeroes_both_of_its_optimizers():
    from mupbench.optim import set_lr

    model = build_model(cfg(64))
    opt = build_optimizer(model, lr=0.01, optimizer="muon", weight_decay=0.1)
    set_lr(opt, 0.5)
    for o in opt.optimizers:
        for g in o.param_groups:
            assert g["lr"] == pytest.approx(0.5 * g["peak_lr"])
            assert g["weight_decay"] == 0.1  # the group's λ, not torch Muon's default 0.1 by accident of defaults
    assert len(opt.param_groups) == sum(len(o.param_groups) for o in opt.optimizers)


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


def test_attention_logit_multiplier_multiplies_the_logits():
    """A model with logit multiplier c computes what the same weights compute with W_q scaled by c."""
    assert build_model(cfg(64, attention_logit_mult=3.0)).blocks[0].attn.scale == pytest.approx(3 / 16)
    torch.manual_seed(0)
    with_mult = build_model(cfg(64, attention_logit_mult=3.0))
    plain = build_model(cfg(64))
    plain.load_state_dict(with_mult.state_dict())
    with torch.no_grad():
        for block in plain.blocks:
            block.attn.q.weight.mul_(3.0)
    tokens = torch.randint(0, 256, (2, 16))
    torch.testing.assert_close(with_mult(tokens), plain(tokens), rtol=1e-4, atol=1e-5)
    unscaled = build_model(cfg(64))
    unscaled.load_state_dict(with_mult.state_dict())
    assert not torch.allclose(with_mult(tokens), unscaled(tokens), rtol=1e-3, atol=1e-4)
