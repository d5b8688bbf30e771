"""`mupbench explain` (every tensor's init and LR at a width) and `mupbench list` (ablations, suites, presets)."""
from __future__ import annotations

import json

from mupbench.errors import UserError
from mupbench.reports.tables import text_table


def add_parser(sub) -> None:
    p = sub.add_parser("explain", help="every tensor's shape, role, init std and LR multiplier at a width")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--depth", type=int, default=None, help="default: the preset's (the depth rule applies relative to "
                   "--base-depth)")
    p.add_argument("--base-depth", type=int, default=None, help="L_base of the depth rule (default: the recipe's)")
    p.add_argument("--parameterization", default="mup", help="mup | sp (default mup)")
    p.add_argument("--base-width", type=int, default=None, help="default: the preset's")
    p.add_argument("--preset", default="cpu-tiny", help="shape to explain (default cpu-tiny)")
    p.add_argument("--ablation", default="baseline", help="explain the model of this ablation (default baseline)")
    p.set_defaults(func=cmd_explain)
    _add_list(sub)


def cmd_explain(args) -> int:
    from mupbench import ablations
    from mupbench.ablations.suites import apply_changes
    from mupbench.config import ModelConfig, TrainConfig
    from mupbench.model import build_model, parameter_roles
    from mupbench.optim import parameter_groups
    from mupbench.parameterization import depth_rule, in_block, init_std, lr_formula, rule
    from mupbench.devices import machine_memory

    preset = ablations.get_preset(args.preset)
    base = preset.base(args.parameterization)
    recipe = apply_changes(base, ablations.get(args.ablation).changes(base))
    for option in ("base_width", "depth", "base_depth"):
        if getattr(args, option) is not None:
            recipe["model"][option] = getattr(args, option)
    cfg = ModelConfig(width=args.width, **recipe["model"])
    need, have = 4 * cfg.parameter_count(), machine_memory()
    if have and need > have / 2:
        raise UserError(f"width {cfg.width} has {cfg.parameter_count():.3g} parameters ({need / 2**30:.3g} GiB in fp32), "
                        f"more than this machine's memory ({have / 2**30:.3g} GiB) can explain: choose a smaller --width")
    tc = TrainConfig(lr=1.0, **recipe["train"])
    model = build_model(cfg)
    # the groups training builds at α = 1: each tensor's LR multiplier, ε and decay are read off them
    groups = parameter_groups(model, 1.0, tc.weight_decay, tc.weight_decay_mode,
                              weight_decay_tensors=tc.weight_decay_tensors, optimizer=tc.optimizer, eps=tc.eps,
                              eps_scaling=tc.eps_scaling)
    group_of = {name: g for g in groups for name in g["names"]}
    decay_text = {"coupled": "α·mult·λ", "independent": "λ", "mup_adamw": "α·λ"}[tc.weight_decay_mode]
    rows = []
    depth = depth_rule(cfg)
    for name, p, role, fan_in in parameter_roles(model):
        r, g = rule(cfg.parameterization, role), group_of[name]
        block = in_block(name)
        std = ({"ones": "1 (const)", "zeros": "0 (const)"}.get(r.init)
               or f"{init_std(cfg, role, fan_in, in_block=block):.4g}")
        lr_text = lr_formula(cfg, role, tc.optimizer).text
        if block and depth.lr_mult.text != "1":
            lr_text += f" · {depth.lr_mult.text}"
        optimizer = g.get("optimizer", "lion" if tc.optimizer == "lion" else "adamw")
        eps = "–" if optimizer != "adamw" else f"{g.get('eps', tc.eps):.3g}"
        rows.append([name, "×".join(map(str, p.shape)), role, std, r.std.text if r.init == "normal" else r.init,
                     optimizer, f"{g['lr_mult']:.4g}", lr_text, eps,
                     decay_text if g["weight_decay"] else "no"])
    print(f"{args.ablation} · {cfg.parameterization} · width {cfg.width} · base width {cfg.base_width} "
          f"(wm = {cfg.width_mult:g}) · depth {cfg.depth} · heads {cfg.heads}×{cfg.head_dim} · "
          f"attention logits × {_attention_scale(cfg)}")
    print(f"depth rule {cfg.depth_parameterization} (m_L = depth / base depth = {cfg.depth}/{cfg.base_depth}): residual "
          f"branches × {depth.branch_mult.text} = {depth.branch_mult(cfg.depth, cfg.base_depth):.4g}; inside the blocks "
          f"LR × {depth.lr_mult.text}, Adam ε × {depth.eps_mult.text}, init × {depth.init_mult.text}")
    print(f"optimizer {tc.optimizer} · weight decay λ = {tc.weight_decay:g} ({tc.weight_decay_mode}, "
          f"{tc.weight_decay_tensors}; per-step decay s(t)·[decay]·p) · Adam ε {tc.eps:g}"
          + (" × LR mult" if tc.eps_scaling else ""))
    print(text_table(["tensor", "shape", "role", "init std", "rule", "optimizer", "LR mult", "rule", "Adam ε",
                      "decay"], rows))
    return 0


def _attention_scale(cfg) -> str:
    text = "1/D" if cfg.attention_scale == "inv_d" else "1/√D"
    if cfg.attention_logit_mult != 1:
        text = f"{cfg.attention_logit_mult:.4g}·{text}"
    value = (1 / cfg.head_dim if cfg.attention_scale == "inv_d" else cfg.head_dim**-0.5) * cfg.attention_logit_mult
    return f"{text} = {value:.4g}"


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="registered ablations, suites and presets")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ablations", action="append", default=[], metavar="PATH_OR_MODULE",
                   help="also load ablations from this file or module")
    p.set_defaults(func=cmd_list)


def cmd_list(args) -> int:
    from mupbench import ablations
    from mupbench.ablations.loader import load_user_ablations

    load_user_ablations(args.ablations)
    base = ablations.get_preset("cpu-tiny").base("mup")
    items = []
    for a in ablations.REGISTRY.values():
        items.append({"name": a.name, "family": a.family, "axis": a.axis, "description": a.description,
                      "changes": a.changes(base), "reported": a.reported, "expected": a.expected, "source": a.source})
    suites = [{"name": s.name, "description": s.description, "preset": s.preset,
               "ablations": [a.name for a, _ in s.resolve()]} for s in ablations.SUITES.values()]
    presets = [{"name": p.name, "description": p.description, "widths": list(p.widths), "depths": list(p.depths),
                "durations": list(p.durations), "axis_width": p.axis_width, "log2_lrs": list(p.log2_lrs), **p.model,
                **p.train} for p in ablations.PRESETS.values()]
    if args.json:
        print(json.dumps({"ablations": items, "suites": suites, "presets": presets}, indent=1, default=str))
        return 0
    print(text_table(["ablation", "family", "axis", "changes", "reported", "description"],
                     [[i["name"], i["family"], i["axis"], ", ".join(f"{k}={v}" for k, v in i["changes"].items()) or "–",
                       i["reported"], i["description"]] for i in items]))
    print("\nsources: " + "; ".join(sorted({i["source"] for i in items})))
    print("\n" + text_table(["suite", "preset", "ablations"],
                            [[s["name"], s["preset"], ", ".join(s["ablations"])] for s in suites]))
    print("\n" + text_table(["preset", "widths", "depths", "durations (steps)", "log2 LR grid", "description"],
                            [[p["name"], "/".join(map(str, p["widths"])),
                              "/".join(map(str, p["depths"])) + f" at width {p['axis_width']}",
                              "/".join(map(str, p["durations"])), f"{p['log2_lrs'][0]:g}…{p['log2_lrs'][-1]:g}",
                              p["description"]] for p in presets]))
    return 0
