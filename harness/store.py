"""The sweep store: one SQLite file per sweep directory, the seam between training and everything downstream.

Tables
    meta     key → value (schema version, sweep settings)
    plan     every run the sweep asked for (hash, labels, spec JSON) — lets status and reports say how complete it is
    runs     one row per finished run (ok | diverged | failed) with its result, environment and spec
    metrics  loss curves: (run, step, split) → loss

A run's row and its curve are written in one transaction, keyed by the run hash, so a process killed at any moment
loses at most the runs in flight and a run is never stored twice. Workers write concurrently (WAL mode).
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

import pandas as pd

from harness.config import RunSpec
from harness.errors import UserError

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
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA busy_timeout=60000")
            version = self._schema_version()
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path} is not a readable mupbench store ({e}): use a new --out directory") from None
        if version is None:
            if not create:
                raise UserError(f"{self.path} holds no mupbench sweep: use a new --out directory")
            self.conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (json.dumps(time.time()),))
            self.conn.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise UserError(
                f"{self.dir} was written by store schema {version}, this mupbench reads schema {SCHEMA_VERSION}: "
                "use a new --out directory (or the mupbench version that wrote it)"
            )

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
    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # plan ---------------------------------------------------------------------------------------------------------
    def add_plan(self, specs: list[RunSpec]) -> None:
        now = time.time()
        rows = [
            (s.run_hash, s.ablation, s.model.parameterization, s.model.width, s.train.lr, s.train.seed,
             json.dumps(s.to_json()), now)
            for s in specs
        ]
        self.conn.execute("BEGIN")
        self.conn.executemany("INSERT OR IGNORE INTO plan VALUES (?,?,?,?,?,?,?,?)", rows)
        self.conn.execute("COMMIT")

    def planned(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT run_hash, ablation, parameterization, width, lr, seed, spec FROM plan", self.conn)

    # runs ---------------------------------------------------------------------------------------------------------
    def finished_hashes(self) -> set[str]:
        q = f"SELECT run_hash FROM runs WHERE status IN ({','.join('?' * len(FINISHED))})"
        return {r[0] for r in self.conn.execute(q, FINISHED)}

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
            self.conn.execute("ROLLBACK")
            raise
        return True

    def runs(self) -> pd.DataFrame:
        """Every stored run; `final_val_loss` is inf for diverged runs."""
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY ablation, parameterization, width, lr, seed", self.conn)
        df["final_val_loss"] = df["final_val_loss"].astype(float)
        df.loc[df["status"] == "diverged", "final_val_loss"] = math.inf
        return df

    def curves(self, run_hashes: list[str] | None = None) -> pd.DataFrame:
        q = "SELECT run_hash, step, split, loss FROM metrics"
        if run_hashes is None:
            return pd.read_sql_query(q, self.conn)
        marks = ",".join("?" * len(run_hashes))
        return pd.read_sql_query(f"{q} WHERE run_hash IN ({marks})", self.conn, params=list(run_hashes))

    def counts(self) -> dict:
        planned = self.conn.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
        by_status = dict(self.conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        return {"planned": planned, **{s: by_status.get(s, 0) for s in ("ok", "diverged", "failed")}}
