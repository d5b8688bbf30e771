"""What a verdict is expected to be: the ablation's registered verdict, or the SP comparison's, and whether an observed
verdict agrees with it. Shared by the reports and the gate."""
from __future__ import annotations


def agreement(observed: str, expected: str) -> str:
    """agree | disagree | no expectation | inconclusive (an inconclusive verdict neither agrees nor disagrees)."""
    if expected not in ("transfers", "shifts"):
        return "no expectation"
    if observed not in ("transfers", "shifts"):
        return "inconclusive"
    return "agree" if observed == expected else "disagree"


def expectation(info: dict | None, parameterization: str, parameterizations_run: set[str]) -> tuple[str, str, str]:
    """(expected, reported, note) for one (ablation, parameterization).

    A registered verdict describes the ablation as registered: a change to the μP baseline, or an ablation that selects
    its parameterization itself (standard_parameterization, run only under SP). A μP ablation that a sweep also runs
    under SP for comparison (the smoke suite's SP baseline) has no registered verdict there, but an expectation: without
    μP's width scaling the optimum moves, and a comparison that transfers cannot tell μP from SP.
    """
    if not info:
        return "unknown", "unknown", "ablation not described in this sweep's store"
    if parameterization != "mup" and "mup" in parameterizations_run:
        if parameterization == "sp":
            return "shifts", "unknown", "the SP comparison of a μP ablation: expected to shift, no registered verdict"
        return "unknown", "unknown", f"a μP ablation run under {parameterization} for comparison: no registered verdict"
    return info.get("expected", "unknown"), info.get("reported", "unknown"), ""
