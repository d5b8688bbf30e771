"""Token data: the embedded default corpus, user files, a fixed train/validation split and deterministic batches.

The default corpus needs no download: the `.py` sources of the running Python's standard library, concatenated in
sorted path order, as bytes (vocab 256). A sweep prepares its corpus once into the sweep directory
(`tokens.npy` + `tokens.json`); every run memory-maps that file, so all runs see the same tokens.

Split: the stream is cut into 64 KiB blocks and every 10th block is validation, so both splits sample the whole corpus.
Batches: the training windows of step i are drawn from a generator seeded by (data seed, seed), so within one seed every
run reads the same sequences and only width and learning rate differ; another seed is a whole replica (its own init
and its own window order). Validation is a fixed number of tokens (`eval_tokens` // seq_len evenly spaced windows of
the validation split): the same held-out set for every run, whatever its seed or batch size.
"""
from __future__ import annotations

import hashlib
import json
import stat
import sysconfig
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mupbench.config import DataSpec
from mupbench.errors import UserError
from mupbench.store import Store, atomic_write

BLOCK = 1 << 16
VALIDATION_EVERY = 10
MIN_TOKENS = VALIDATION_EVERY * BLOCK  # the least that gives both splits a block
TOKEN_FILE, META_FILE = "tokens.npy", "tokens.json"
MAX_VOCAB = 1 << 31  # token ids are stored as at most uint32, and embedded by a model with this many rows at most


def stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)


def _bytes_of(paths: list[Path]) -> np.ndarray:
    return np.frombuffer(b"".join(p.read_bytes() for p in paths), dtype=np.uint8)


def _regular_file(p: Path, path: str) -> None:
    """Refuse what is not a regular file (a device like /dev/zero, a FIFO, a socket) before reading it forever."""
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise UserError(f"cannot read data file {path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"data {path} is not a regular file or directory: point --data at text files or a token file")


def load_tokens(path: str | None, vocab_size: int | None = None, dtype: str = "uint16") -> tuple[np.ndarray, int, str]:
    """(tokens, vocab size, name) from the default corpus (path None) or a user path.

    A directory or text file is read as bytes (vocab 256); `.npy` holds integer token ids; `.bin` is a raw nanoGPT-style
    token file of `dtype` (uint16 or uint32). The vocab size of a token file is `vocab_size` or max id + 1.
    """
    if path is None:
        return _bytes_of(stdlib_sources()), 256, "stdlib"
    p = Path(path)
    if not p.is_dir():
        _regular_file(p, path)
    try:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
            if not files:
                raise UserError(f"data directory {path} holds no files: point --data at text files or a token file")
            return _bytes_of(files), 256, str(path)
        if p.suffix == ".npy":
            tokens = np.load(p, mmap_mode="r")
            if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
                raise UserError(f"{path} must hold a 1-D array of integer token ids, found {tokens.dtype} {tokens.shape}")
        elif p.suffix == ".bin":
            if dtype not in ("uint16", "uint32"):
                raise UserError(f"--data-dtype {dtype!r} is not one of: uint16, uint32")
            tokens = np.memmap(p, dtype=dtype, mode="r")
        else:
            return np.frombuffer(p.read_bytes(), dtype=np.uint8), 256, str(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read data file {path}: {e.strerror if isinstance(e, OSError) else e}") from None
    if len(tokens) == 0:
        raise UserError(f"data file {path} is empty")
    if tokens.dtype.kind == "i" and int(tokens.min()) < 0:
        raise UserError(f"{path} holds negative token id {int(tokens.min())}: token ids must be 0 or more")
    top = int(tokens.max()) + 1
    if top > MAX_VOCAB or (vocab_size is not None and not 1 <= vocab_size <= MAX_VOCAB):
        raise UserError(f"{path}: a vocabulary of {vocab_size or top} tokens is outside 1…{MAX_VOCAB}: check the token file")
    if vocab_size is not None and top > vocab_size:
        raise UserError(f"{path} holds token id {top - 1}, outside --vocab-size {vocab_size}: raise the vocab size")
    return np.asarray(tokens), vocab_size or top, str(path)


def describe(tokens: np.ndarray, vocab: int, name: str) -> tuple[np.ndarray, DataSpec]:
    """The tokens in their storage dtype and their spec (digest of the exact stored bytes)."""
    store_dtype = np.uint8 if vocab <= 256 else np.uint16 if vocab <= 65536 else np.uint32
    if len(tokens) < MIN_TOKENS:
        raise UserError(f"data {name} has {len(tokens)} tokens; at least {MIN_TOKENS} ({VALIDATION_EVERY} blocks of "
                        f"{BLOCK}) are needed for a train/validation split: give more data")
    tokens = np.ascontiguousarray(tokens, dtype=store_dtype)
    spec = DataSpec(name=name, sha256=hashlib.sha256(tokens.tobytes()).hexdigest(), n_tokens=len(tokens), vocab_size=vocab)
    return tokens, spec


def stored_spec(sweep_dir: Path) -> DataSpec | None:
    """The corpus a sweep directory was prepared with, or None when it has none (or its tokens.json is unreadable: the
    caller then prepares the corpus again and checks it against the runs already planned)."""
    meta = sweep_dir / META_FILE
    try:
        return DataSpec(**json.loads(meta.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None


def check_split(spec: DataSpec, seq_len: int) -> None:
    """Both splits hold at least one sequence of `seq_len` + 1 tokens (UserError otherwise)."""
    blocks = spec.n_tokens // BLOCK
    val = blocks // VALIDATION_EVERY * BLOCK
    train = (blocks - blocks // VALIDATION_EVERY) * BLOCK
    if min(val, train) < seq_len + 2:
        raise UserError(f"data {spec.name} ({spec.n_tokens} tokens) leaves {val} validation and {train} training "
                        f"tokens, too few for sequences of {seq_len}: give more data")


def write(sweep_dir: Path, tokens: np.ndarray, spec: DataSpec) -> None:
    """Store the corpus in the sweep directory (atomically: tokens.npy, then tokens.json marks it complete)."""
    tokens = np.ascontiguousarray(tokens)

    def save(f) -> None:  # np.save's own writer reports a full disk without errno; a plain write says ENOSPC
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(tokens))
        f.write(memoryview(tokens).cast("B"))

    atomic_write(sweep_dir / TOKEN_FILE, writer=save)
    atomic_write(sweep_dir / META_FILE, json.dumps(asdict(spec), indent=1))


def corpus_intact(sweep_dir: Path, spec: DataSpec) -> bool:
    """Whether tokens.npy is readable and holds exactly the tokens `spec` names (its SHA-256)."""
    try:
        tokens = np.load(sweep_dir / TOKEN_FILE, mmap_mode="r")
        return tokens.ndim == 1 and len(tokens) == spec.n_tokens and \
            hashlib.sha256(np.ascontiguousarray(tokens).tobytes()).hexdigest() == spec.sha256
    except (OSError, ValueError, EOFError):
        return False


class Batches:
    """Deterministic training and validation batches over a prepared token file."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, steps: int, eval_tokens: int,
                 seed: int | tuple[int, ...]):
        n = len(tokens) - len(tokens) % BLOCK
        blocks = np.arange(n // BLOCK)
        is_val = blocks % VALIDATION_EVERY == VALIDATION_EVERY - 1
        self.train = np.concatenate([tokens[b * BLOCK : (b + 1) * BLOCK] for b in blocks[~is_val]])
        self.val = np.concatenate([tokens[b * BLOCK : (b + 1) * BLOCK] for b in blocks[is_val]])
        self.batch_size, self.seq_len = batch_size, seq_len
        rng = np.random.default_rng(seed)
        self.train_offsets = rng.integers(0, len(self.train) - seq_len - 1, size=(steps, batch_size))
        n_eval = max(1, eval_tokens // seq_len)
        if len(self.val) < seq_len + 1:
            raise UserError(f"validation split ({len(self.val)} tokens) is shorter than one sequence of {seq_len}")
        # Evenly spaced windows over the whole validation split: the same held-out set for every run, evaluated in
        # chunks of the training batch size (the loss is a sum over tokens, so the chunking does not change it).
        offsets = np.linspace(0, len(self.val) - seq_len - 1, n_eval).astype(np.int64)
        self.val_offsets = [offsets[i : i + batch_size] for i in range(0, n_eval, batch_size)]

    @staticmethod
    def _gather(stream: np.ndarray, offsets: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = offsets[:, None] + np.arange(seq_len + 1)[None, :]
        window = torch.from_numpy(stream[idx].astype(np.int64))
        return window[:, :-1], window[:, 1:]

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gather(self.train, self.train_offsets[step], self.seq_len)

    def val_batches(self):
        for offsets in self.val_offsets:
            yield self._gather(self.val, offsets, self.seq_len)


def open_tokens(sweep_dir: Path) -> np.ndarray:
    return np.load(sweep_dir / TOKEN_FILE, mmap_mode="r")


# --- a sweep directory's corpus ---------------------------------------------------------------------------------
def sweep_data(out: Path, path: str | None, vocab_size: int | None, dtype: str):
    """(DataSpec, tokens to write or None): the directory's stored corpus, or the one `path` names (default stdlib).

    A stored corpus whose tokens.npy is missing or damaged is prepared again from its source when that still gives the
    same tokens (same SHA-256), and refused otherwise; a damaged tokens.json is recovered from the planned runs."""
    spec = stored_spec(out) or _planned_data(out)
    if spec is None:
        tokens, spec = describe(*load_tokens(path, vocab_size, dtype))
        return spec, tokens
    if path is not None and spec.name != str(path):
        raise UserError(f"{out} was prepared from data {spec.name!r}, not {path!r}: use another --out")
    if corpus_intact(out, spec):
        # intact tokens; a damaged tokens.json is written again from the planned runs' spec
        return spec, (None if stored_spec(out) == spec else np.load(out / TOKEN_FILE))
    source = None if spec.name == "stdlib" else spec.name
    try:
        tokens, rebuilt = describe(*load_tokens(source, spec.vocab_size, dtype))
    except UserError as e:
        raise UserError(f"{out}/{TOKEN_FILE} is missing or damaged and its source cannot be read again ({e}): "
                        "restore the file, or use a new --out") from None
    if rebuilt.sha256 != spec.sha256:
        raise UserError(f"{out}/{TOKEN_FILE} is missing or damaged, and its source {spec.name} now gives other "
                        f"tokens (sha256 {rebuilt.sha256[:12]}, the sweep's {spec.sha256[:12]}): restore the data, or "
                        "use a new --out")
    return spec, tokens


def _planned_data(out: Path):
    """The corpus the runs already planned in `out` were planned with (when tokens.json is gone), or None."""
    if not (out / "mupbench.sqlite").exists():
        return None
    store = Store(out)
    try:
        plan = store.planned()
    finally:
        store.close()
    return DataSpec(**json.loads(plan["spec"].iloc[0])["data"]) if len(plan) else None
