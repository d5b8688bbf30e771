"""The ablation registry: a named, documented change to the baseline config plus what the literature reports.

An ablation is a function decorated with `@ablation(...)`. It receives the base recipe (the preset's resolved
settings as `{"model": {...}, "train": {...}}`) and returns the fields it changes as dotted keys, e.g.
`{"model.activation": "swiglu"}` — so every ablation declares exactly what it touches, and two ablations that touch
the same field can be refused when combined. Its docstring is its description.

    from mupbench.ablations import ablation

    @ablation(reported="unknown", source="my team's notes")
    def wide_mlp(base):
        \"\"\"MLP hidden size 8·width instead of 4·width.\"\"\"
        return {"model.mlp_ratio": 8.0}
"""
from __future__ import annotations

import copy
import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

from mupbench.errors import UserError

VERDICTS = ("transfers", "shifts", "unknown")
AXES = ("width", "depth", "duration")  # what an ablation's sweep scales (duration: training tokens)


@dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    reported: str  # what the literature reports: transfers | shifts | unknown
    expected: str  # what a gate expects: the reported verdict, or a documented expectation where none is published
    source: str
    family: str
    change: Callable[[dict], dict]
    axis: str = "width"  # the sweep it is meant for: width × LR, depth × LR or duration × LR

    def changes(self, base: dict) -> dict:
        """The fields this ablation changes; user code failing in any way (an exception, sys.exit) is a UserError."""
        try:
            out = self.change(copy.deepcopy(base))
        except UserError:
            raise
        except (Exception, SystemExit) as e:
            raise UserError(f"ablation {self.name!r} failed: {type(e).__name__}: {e}") from None
        if not isinstance(out, dict):
            raise UserError(f"ablation {self.name!r} must return a dict of dotted field changes, got {type(out).__name__}")
        for key in out:
            section, _, name = key.partition(".")
            if section not in ("model", "train") or name not in base.get(section, {}):
                raise UserError(f"ablation {self.name!r} changes unknown field {key!r}: use model.<field> or train.<field>")
        return out


REGISTRY: dict[str, Ablation] = {}


def ablation(
    name: str | None = None, *, reported: str, source: str, expected: str | None = None, family: str | None = None,
    axis: str = "width",
):
    """Register the decorated function as an ablation (see the module docstring). `axis`: the scale its sweep varies,
    width (the default), depth or duration; `reported`/`expected` are verdicts along that axis."""
    for label, verdict in (("reported", reported), ("expected", expected or reported)):
        if verdict not in VERDICTS:
            raise ValueError(f"{label} verdict {verdict!r} is not one of {VERDICTS}")
    if axis not in AXES:
        raise ValueError(f"axis {axis!r} is not one of {AXES}")

    def register(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        key = name or fn.__name__
        if key in REGISTRY and REGISTRY[key].change is not fn:
            raise UserError(f"ablation {key!r} is registered twice: rename one of them")
        module = fn.__module__.rsplit(".", 1)[-1]
        REGISTRY[key] = Ablation(
            name=key,
            description=" ".join(inspect.cleandoc(fn.__doc__ or "").split()) or key,  # one line, for tables
            reported=reported,
            expected=expected or reported,
            source=source,
            family=family or module,
            change=fn,
            axis=axis,
        )
        return fn

    return register


def combine(parts: list[Ablation]) -> Ablation:
    """Several ablations applied together (`a+b`); refused when two of them change the same field or are meant for
    different axes."""
    axes = sorted({p.axis for p in parts})
    if len(axes) > 1:
        raise UserError(f"ablations {' + '.join(p.name for p in parts)} are meant for different axes ({', '.join(axes)}): "
                        "combine ablations of one axis")

    def change(base: dict) -> dict:
        merged: dict = {}
        owner: dict[str, str] = {}
        for part in parts:
            for key, value in part.changes(base).items():
                if key in owner:
                    raise UserError(
                        f"ablations {owner[key]!r} and {part.name!r} both change {key}: "
                        "their combination would test only one of them; run them separately"
                    )
                owner[key] = part.name
                merged[key] = value
        return merged

    return Ablation(
        name="+".join(p.name for p in parts),
        description=" + ".join(p.description for p in parts),
        reported="unknown",
        expected="transfers" if all(p.expected == "transfers" for p in parts) else "unknown",
        source="combination of: " + "; ".join(f"{p.name} ({p.source})" for p in parts),
        family="combined",
        change=change,
        axis=axes[0],
    )


def get(name: str) -> Ablation:
    """A registered ablation by name, or a combination written `a+b`."""
    if "+" in name:
        return combine([get(part.strip()) for part in name.split("+")])
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "`mupbench list` shows them all"
        raise UserError(f"unknown ablation {name!r}: {hint}")
    return REGISTRY[name]
