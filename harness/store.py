"""The sweep store: one SQLite file per sweep directory, the seam between training and everything downstream.

Tables
    meta     key → value (schema version, sweep settings)
    plan     every run the sweep asked for (hash, labels, spec JSON) — lets status and reports say how complete it is
    runs     one row per finished run (ok | diverged | failed) with its result, environment and spec
    metrics  loss curves: (run, step, split) → loss

A run's row and its curve are written in one transaction, keyed by the run hash, so a process killed at any moment
loses at most the runs in flight and a run is never stored twice. Workers write concurrently (WAL mode).

Every SQLite failure leaves this module as a UserError naming the store and what is wrong with it (damaged, read-only,
disk full). The other files of a sweep directory (corpus, reports) are written with `atomic_write`: a unique temporary
name beside the target, fsync, rename — a reader sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import pandas as pd

from mupbench.config import AXIS_KEY, RunSpec
from mupbench.errors import UserError

SCHEMA_VERSION = 1
STORE_FILE = "mupbench.sqlite"
FINISHED = ("ok", "diverged")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plan (
    run_hash TEXT PRIMARY KEY, ablation TEXT NOT NULL, parameterization TEXT NOT NULL, width INTEGER NOT NULL,
    lr REAL NOT NULL, seed INTEGER NOT NULL, spec TEXT NOT NULL, planned_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_hash TEXT PRIMARY KEY, ablation TEXT NOT NULL, parameterization TEXT NOT NULL, width INTEGER NOT NULL,
    lr REAL NOT NULL, log2_lr REAL NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL, final_val_loss REAL,
    steps_done INTEGER, n_params INTEGER, tokens_per_s REAL, wall_s REAL, device TEXT, kernels TEXT,
    versions TEXT, git_rev TEXT, error TEXT, spec TEXT NOT NULL, finished_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    run_hash TEXT NOT NULL, step INTEGER NOT NULL, split TEXT NOT NULL, loss REAL,
    PRIMARY KEY (run_hash, step, split));
"""


def atomic_write(path: str | Path, data: bytes | str | None = None, writer=None) -> Path:
    """Write `data` (or whatever `writer(binary_file)` writes) to `path` atomically: a unique temporary file in the same
    directory, flushed and fsynced, then renamed over `path`. On any failure the temporary file is removed and `path`
    is untouched; OSError (disk full, read-only) propagates for the caller to report."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; these files are a sweep's ordinary output
        with os.fdopen(fd, "wb") as f:
            if writer is not None:
                writer(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:  # name the file asked for, not the temporary one
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def with_axes(df: pd.DataFrame) -> pd.DataFrame:
    """Add the columns the other scaling axes need, read from each run's spec: depth, steps, tokens (steps × tokens
    per step), axis (the axis the run was planned on; width for runs planned before there were others) and scale (the
    run's value on that axis)."""
    specs = [stored_spec(text, h) for text, h in zip(df["spec"], df["run_hash"])] if len(df) else []
    df["depth"] = pd.Series([s["model"]["depth"] for s in specs], index=df.index, dtype="int64")
    df["steps"] = pd.Series([s["train"]["steps"] for s in specs], index=df.index, dtype="int64")
    df["tokens"] = pd.Series([s["train"]["steps"] * s["train"]["batch_size"] * s["train"]["seq_len"] for s in specs],
                             index=df.index, dtype="int64")
    df["axis"] = pd.Series([s.get("extra", {}).get(AXIS_KEY, "width") for s in specs], index=df.index, dtype="object")
    df["scale"] = pd.Series([int(df.at[i, a]) for i, a in zip(df.index, df["axis"])], index=df.index, dtype="int64")
    return df


def damaged_content(what: str, why: str) -> UserError:
    return UserError(f"{what} in the store is damaged ({why}): use a new --out directory, or the mupbench version "
                     "that wrote it")


_INT_FIELDS = {"model": ("width", "depth"), "train": ("steps", "batch_size", "seq_len", "seed")}


def stored_spec(text, run_hash: str) -> dict:
    """A stored run spec (JSON text) as a dict, checked for the fields the analysis reads; UserError when it is not."""
    try:
        spec = json.loads(text)
    except (TypeError, ValueError) as e:
        raise damaged_content(f"the spec of run {run_hash}", f"not JSON: {e}") from None
    ok = isinstance(spec, dict) and all(isinstance(spec.get(k), dict) for k in ("model", "train", "data"))
    ok = ok and isinstance(spec.get("extra", {}), dict) and all(
        isinstance(spec[section].get(f), int) and not isinstance(spec[section].get(f), bool)
        for section, fields in _INT_FIELDS.items() for f in fields)
    if not ok:
        raise damaged_content(f"the spec of run {run_hash}", "not a mupbench run spec")
    return spec


def _is_ablation_info(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items())


# The shape of each meta value the harness reads; a value of another shape is damage, reported in one line.
META_SHAPES = {
    "ablation_info": (_is_ablation_info, "a mapping of ablation names to descriptions"),
    "suites": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of suite names"),
    "preset": (lambda v: v is None or isinstance(v, str), "a preset name"),
    "seeds": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "created_at": (lambda v: v is None or isinstance(v, (int, float)) and not isinstance(v, bool), "a time"),
}


def store_error(path: Path, e: sqlite3.Error) -> UserError:
    """A one-line UserError saying what is wrong with the store at `path`."""
    text = str(e)
    low = text.lower()
    if "full" in low or getattr(e, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
        return UserError(f"disk full while writing {path}: free some space and run the same command again "
                         "(finished runs are kept)")
    if "readonly" in low or "read-only" in low:
        return UserError(f"{path} is read-only ({text}): make its directory writable, or copy the sweep elsewhere")
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return UserError(f"{path} is damaged ({text}): save what SQLite can with `sqlite3 {path} .recover`, or use a "
                         "new --out directory")
    if "locked" in low or "busy" in low:
        return UserError(f"{path} stayed locked by another process ({text}): wait for it to finish and try again")
    if "unable to open" in low:
        return UserError(f"cannot open {path} ({text}): check that its directory exists and is readable")
    return UserError(f"the store {path} failed: {text}")


def _guarded(method):
    """Turn a SQLite error (and an OSError from the disk) raised by a Store method into a one-line UserError."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise store_error(self.path, e) from None
        except pd.errors.DatabaseError as e:  # pandas wraps SQLite's errors in read_sql_query
            cause = e.__cause__ if isinstance(e.__cause__, sqlite3.Error) else sqlite3.DatabaseError(str(e))
            raise store_error(self.path, cause) from None

    return wrapper


def _loss_out(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


class Store:
    def __init__(self, sweep_dir: str | Path, create: bool = False):
        self.dir = Path(sweep_dir)
        self.path = self.dir / STORE_FILE
        if not self.path.exists():
            if not create:
                raise UserError(f"{self.dir} is not a mupbench sweep directory (no {STORE_FILE}): run `mupbench run --out {self.dir}` first")
            self.dir.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise UserError(f"{self.path} is not a file: use a new --out directory")
        try:
            self.conn = self._connect(create)
            version = self._schema_version()
        except sqlite3.Error as e:
            if "not a database" in str(e).lower():
                raise UserError(f"{self.path} is not a readable mupbench store ({e}): use a new --out directory") from None
            raise store_error(self.path, e) from None
        if version is None:
            if not create:
                raise UserError(f"{self.path} holds no mupbench sweep: use a new --out directory")
            self._create_schema()
        elif version != SCHEMA_VERSION:
            raise UserError(
                f"{self.dir} was written by store schema {version}, this mupbench reads schema {SCHEMA_VERSION}: "
                "use a new --out directory (or the mupbench version that wrote it)"
            )

    def _connect(self, create: bool) -> sqlite3.Connection:
        """A read-write connection in WAL mode; for a reader of a store it cannot write (a read-only mount or file), a
        read-only one, so status, analyze and report still work there."""
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        except sqlite3.OperationalError as e:
            conn.close()
            if create or "readonly" not in str(e).lower() and "unable to open" not in str(e).lower():
                raise
        self.read_only = True
        return sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, isolation_level=None)

    read_only = False

    @_guarded
    def _create_schema(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                self.conn.execute(stmt)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (json.dumps(time.time()),))
        self.conn.execute("COMMIT")

    def _schema_version(self) -> int | None:
        has_meta = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if not has_meta:
            return None
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        try:
            return int(row[0]) if row else -1
        except ValueError:
            return -1

    def close(self) -> None:
        self.conn.close()

    # meta ---------------------------------------------------------------------------------------------------------
    @_guarded
    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if not row:
            return default
        try:
            value = json.loads(row[0])
        except (TypeError, ValueError) as e:
            raise damaged_content(f"the setting {key!r}", f"not JSON: {e}") from None
        check, shape = META_SHAPES.get(key, (None, None))
        if check is not None and not check(value):
            raise damaged_content(f"the setting {key!r}", f"not {shape}")
        return value

    @_guarded
    def set_meta(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # plan ---------------------------------------------------------------------------------------------------------
    @_guarded
    def add_plan(self, specs: list[RunSpec]) -> None:
        now = time.time()
        rows = [
            (s.run_hash, s.ablation, s.model.parameterization, s.model.width, s.train.lr, s.train.seed,
             json.dumps(s.to_json()), now)
            for s in specs
        ]
        self.conn.execute("BEGIN")
        try:
            self.conn.executemany("INSERT OR IGNORE INTO plan VALUES (?,?,?,?,?,?,?,?)", rows)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    @_guarded
    def planned(self) -> pd.DataFrame:
        return with_axes(pd.read_sql_query("SELECT run_hash, ablation, parameterization, width, lr, seed, spec FROM plan",
                                           self.conn))

    # runs ---------------------------------------------------------------------------------------------------------
    @_guarded
    def finished_hashes(self) -> set[str]:
        q = f"SELECT run_hash FROM runs WHERE status IN ({','.join('?' * len(FINISHED))})"
        return {r[0] for r in self.conn.execute(q, FINISHED)}

    @_guarded
    def statuses(self) -> dict[str, str]:
        """run hash → stored status (ok, diverged or failed) of every stored run."""
        return dict(self.conn.execute("SELECT run_hash, status FROM runs"))

    @_guarded
    def record(self, spec: RunSpec, result: dict, env: dict) -> bool:
        """Store a run and its curve atomically. Returns False when the run was already stored as finished."""
        h = spec.run_hash
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute("SELECT status FROM runs WHERE run_hash=?", (h,)).fetchone()
            if row and row[0] in FINISHED:
                self.conn.execute("ROLLBACK")
                return False
            self.conn.execute("DELETE FROM runs WHERE run_hash=?", (h,))
            self.conn.execute("DELETE FROM metrics WHERE run_hash=?", (h,))
            self.conn.execute(
                "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    h, spec.ablation, spec.model.parameterization, spec.model.width, spec.train.lr,
                    spec.train.log2_lr, spec.train.seed, result["status"], _loss_out(result.get("final_val_loss")),
                    result.get("steps_done"), result.get("n_params"), result.get("tokens_per_s"),
                    result.get("wall_s"), env.get("device"), result.get("kernels"), json.dumps(env.get("versions", {})),
                    env.get("git_rev"), result.get("error"), json.dumps(spec.to_json()), time.time(),
                ),
            )
            self.conn.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?)",
                [(h, step, split, _loss_out(loss)) for step, split, loss in result.get("curve", [])],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # a failed COMMIT (disk full) has already rolled back
                self.conn.execute("ROLLBACK")
            raise
        return True

    @_guarded
    def runs(self) -> pd.DataFrame:
        """Every stored run; `final_val_loss` is inf for diverged runs."""
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY ablation, parameterization, width, lr, seed", self.conn)
        df["final_val_loss"] = df["final_val_loss"].astype(float)
        df.loc[df["status"] == "diverged", "final_val_loss"] = math.inf
        return with_axes(df)

    @_guarded
    def curves(self, run_hashes: list[str] | None = None) -> pd.DataFrame:
        q = "SELECT run_hash, step, split, loss FROM metrics"
        if run_hashes is None:
            return pd.read_sql_query(q, self.conn)
        marks = ",".join("?" * len(run_hashes))
        return pd.read_sql_query(f"{q} WHERE run_hash IN ({marks})", self.conn, params=list(run_hashes))

    @_guarded
    def counts(self) -> dict:
        planned = self.conn.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
        by_status = dict(self.conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        return {"planned": planned, **{s: by_status.get(s, 0) for s in ("ok", "diverged", "failed")}}
