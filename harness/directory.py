"""A sweep directory: the lock one `mupbench run` holds on it, the checks that it can be written and holds this sweep
(not another preset's or another model's), and what it records besides runs (the corpus, the sweep's metadata).

    DIR/mupbench.sqlite   the store (mupbench.store): every planned run and every result
    DIR/tokens.npy, .json the corpus the runs train on (mupbench.data)
    DIR/mupbench.lock     held by the `mupbench run` writing into DIR
    DIR/checkpoints/      WSD families' branch points while a duration sweep runs (mupbench.branches)
    DIR/report.html, results.json, summary.md, junit.xml, coord_check.json   outputs (mupbench.reports)
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

from mupbench import branches, byo
from mupbench.config import RunSpec
from mupbench.errors import UserError
from mupbench.store import Store

# --- a sweep directory, end to end --------------------------------------------------------------------------------
def check_directory(out: Path, preset: str, model: dict | None, trainer: dict | None = None) -> None:
    """Refuse a sweep directory that holds another preset's sweep, another model's runs or another trainer's runs
    (UserError): their results must not be averaged with this sweep's."""
    if not (out / "mupbench.sqlite").exists():
        return
    store = Store(out)
    try:
        stored_preset = store.get_meta("preset")
        stored_model = store.get_meta(byo.STORE_META_KEY)
        stored_trainer = store.get_meta(TRAINER_META_KEY)
        has_runs = bool(store.counts()["planned"])
    finally:
        store.close()
    if stored_preset not in (None, preset):
        raise UserError(f"{out} holds a sweep at preset {stored_preset!r}, not {preset!r}: use another --out")
    _check_trainer(out, stored_trainer, trainer, has_runs)
    if model is None:
        if stored_model is not None:
            raise UserError(f"{out} holds runs of --model {stored_model['spec']}: pass that --model, or use another --out")
        return
    if stored_model is not None and byo.ModelSource.identity(stored_model) != byo.ModelSource.identity(model):
        same_file = stored_model["file"] == model["file"] and stored_model["factory"] == model["factory"]
        changed = byo.changed_files(stored_model.get("code"), model.get("code") or {}) if same_file else []
        what = (f"an earlier version of this model's code (changed: {', '.join(changed[:4])})" if changed else
                "an earlier version of this model file" if same_file else "a different model")
        raise UserError(f"{out} holds runs of {what} ({stored_model['spec']}, sha256 {stored_model['sha256'][:12]}, "
                        f"reinit {stored_model['reinit']}): use a new --out for this one")
    if stored_model is None and has_runs:
        raise UserError(f"{out} holds runs of the built-in model: use a new --out for --model {model['spec']}")


TRAINER_META_KEY = "trainer"  # the user's trainer a sweep's runs were trained by (label, kind, identity)


def trainer_meta(entry: dict) -> dict:
    return {k: entry[k] for k in ("kind", "label", "identity")}


def _check_trainer(out: Path, stored: dict | None, trainer: dict | None, has_runs: bool) -> None:
    if stored is None and (trainer is None or not has_runs):
        return
    if trainer is None:
        raise UserError(f"{out} holds runs of the trainer {stored['label']}: pass it again, or use another --out")
    if stored is None:
        raise UserError(f"{out} holds runs of mupbench's own trainer: use a new --out for {trainer['label']}")
    if stored["identity"] != trainer["identity"]:
        what = "an earlier version of this trainer" if stored["label"] == trainer["label"] else "another trainer"
        raise UserError(f"{out} holds runs of {what} ({stored['label']}): its results must not be averaged with this "
                        "one's; use a new --out")


LOCK_FILE = "mupbench.lock"


@contextlib.contextmanager
def locked(out: Path):
    """Hold the sweep directory for one `mupbench run` (flock on DIR/mupbench.lock, released when the process ends,
    however it ends); a second one on the same directory is refused with one line."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise UserError(f"another `mupbench run` (pid {holder}) is running in {out}: wait for it to finish, "
                            "or use another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def check_writable(path: Path, option: str = "--out") -> None:
    """`path` is, or can be made, a directory this process can write in (UserError otherwise): checked by creating
    and removing an empty directory in it or in its nearest existing ancestor, so nothing is left behind."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == path else f"lies under the file {existing}"
        raise UserError(f"{option} {path} {where}: give a directory path")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".mupbench-probe-"))
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write in {existing} ({e.strerror}): choose a writable directory") from None


def record_sweep(out: Path, tokens, data_spec, preset: str, suite: str, ablation_info: dict, seeds: int = 1) -> None:
    """Write what a sweep directory holds besides runs: the corpus (first time) and the sweep's metadata."""
    from mupbench import data

    out.mkdir(parents=True, exist_ok=True)
    if tokens is not None:
        data.write(out, tokens, data_spec)
    store = Store(out, create=True)
    try:
        store.set_meta("preset", preset)
        store.set_meta("seeds", max(seeds, store.get_meta("seeds", 1)))
        store.set_meta("suites", sorted(set(store.get_meta("suites", [])) | {suite}))
        store.set_meta("ablation_info", {**store.get_meta("ablation_info", {}), **ablation_info})
    finally:
        store.close()


def store_counts(sweep_dir: Path) -> dict:
    store = Store(sweep_dir)
    try:
        return store.counts()
    finally:
        store.close()


def remove_finished_checkpoints(sweep_dir: Path) -> None:
    """Delete the checkpoints of the WSD families whose planned runs (every run the store's plan holds) are all
    stored as finished."""
    if not (sweep_dir / branches.CHECKPOINT_DIR).is_dir():
        return
    store = Store(sweep_dir)
    try:
        planned = [RunSpec.from_json(json.loads(text)) for text in store.planned()["spec"]]
        branches.remove_finished(sweep_dir, planned, store.finished_hashes())
    finally:
        store.close()
