"""The code behind the user ablations a run-style command selects: each one's digest (mupbench.byo.code: the file
defining it and every file of the user's it imports), carried by its run specs (config.ABLATION_CODE_KEY) and stored
with the sweep's ablation descriptions, and checked against a sweep directory before anything is written: runs of an
edited ablation are never averaged with its earlier version's."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from mupbench.byo.code import changed_files, code_digest, code_identity
from mupbench.config import ABLATION_CODE_KEY
from mupbench.errors import UserError
from mupbench.store import STORE_FILE, Store


def user_ablation_code(entries) -> dict[str, dict]:
    """name → {"sha256", "code"} of each selected ablation defined outside mupbench (of a combination `a+b`: its
    parts')."""
    from mupbench.ablations import registry

    out = {}
    for ablation, _ in entries:
        parts = [registry.REGISTRY[n] for n in ablation.name.split("+")] if "+" in ablation.name else [ablation]
        code: dict[str, str] = {}
        for path in dict.fromkeys(p for p in map(_defining_file, parts) if p is not None):
            code.update(code_identity(path))
        if code:
            out[ablation.name] = {"sha256": code_digest(code), "code": code}
    return out


def _defining_file(ablation) -> Path | None:
    """The file defining a user ablation's function; None for mupbench's own (identified by mupbench's version)."""
    import mupbench
    from mupbench import ablations

    try:
        path = Path(inspect.getsourcefile(ablation.change) or "").resolve()
    except TypeError:  # defined where no source file exists: nothing to identify it by
        return None
    own = [Path(m.__file__).resolve().parent for m in (mupbench, ablations)]
    return None if not path.is_file() or any(path.is_relative_to(d) for d in own) else path


def with_ablation_code(specs: list, codes: dict[str, dict]) -> list:
    return [dataclasses.replace(s, extra={**s.extra, ABLATION_CODE_KEY: codes[s.ablation]}) if s.ablation in codes
            else s for s in specs]


def with_code_info(info: dict, codes: dict[str, dict]) -> dict:
    """The sweep's ablation descriptions (cli.run.ablation_info) with each user ablation's code."""
    return {name: {**entry, "code": codes[name]} if name in codes else entry for name, entry in info.items()}


def check_stored_code(out: Path, codes: dict[str, dict]) -> None:
    """Refuse (UserError) a sweep directory holding runs of an earlier version of a selected user ablation."""
    if not codes or not (out / STORE_FILE).exists():
        return
    store = Store(out)
    try:
        stored = store.get_meta("ablation_info", {}) or {}
        planned = set(store.planned()["ablation"])
    finally:
        store.close()
    for name, now in codes.items():
        before = (stored.get(name) or {}).get("code")
        if name not in planned or (isinstance(before, dict) and before.get("sha256") == now["sha256"]):
            continue
        files = changed_files(before.get("code") if isinstance(before, dict) else None, now["code"])
        raise UserError(f"{out} holds runs of an earlier version of ablation {name!r} (changed: "
                        f"{', '.join(files[:4]) or '?'}): their results must not be averaged with the new code's; "
                        "revert the change, or use a new --out")
