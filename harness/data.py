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
import os
import sysconfig
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from harness.config import DataSpec
from harness.errors import UserError

BLOCK = 1 << 16
VALIDATION_EVERY = 10
TOKEN_FILE, META_FILE = "tokens.npy", "tokens.json"


def stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)


def _bytes_of(paths: list[Path]) -> np.ndarray:
    return np.frombuffer(b"".join(p.read_bytes() for p in paths), dtype=np.uint8)


def load_tokens(path: str | None, vocab_size: int | None = None, dtype: str = "uint16") -> tuple[np.ndarray, int, str]:
    """(tokens, vocab size, name) from the default corpus (path None) or a user path.

    A directory or text file is read as bytes (vocab 256); `.npy` holds integer token ids; `.bin` is a raw nanoGPT-style
    token file of `dtype` (uint16 or uint32). The vocab size of a token file is `vocab_size` or max id + 1.
    """
    if path is None:
        return _bytes_of(stdlib_sources()), 256, "stdlib"
    p = Path(path)
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
    top = int(tokens.max()) + 1
    if vocab_size is not None and top > vocab_size:
        raise UserError(f"{path} holds token id {top - 1}, outside --vocab-size {vocab_size}: raise the vocab size")
    return np.asarray(tokens), vocab_size or top, str(path)


def describe(tokens: np.ndarray, vocab: int, name: str) -> tuple[np.ndarray, DataSpec]:
    """The tokens in their storage dtype and their spec (digest of the exact stored bytes)."""
    store_dtype = np.uint8 if vocab <= 256 else np.uint16 if vocab <= 65536 else np.uint32
    tokens = np.ascontiguousarray(tokens, dtype=store_dtype)
    if len(tokens) < 4 * BLOCK:
        raise UserError(f"data {name} has {len(tokens)} tokens; at least {4 * BLOCK} are needed for a train/validation split")
    spec = DataSpec(name=name, sha256=hashlib.sha256(tokens.tobytes()).hexdigest(), n_tokens=len(tokens), vocab_size=vocab)
    return tokens, spec


def stored_spec(sweep_dir: Path) -> DataSpec | None:
    meta = sweep_dir / META_FILE
    return DataSpec(**json.loads(meta.read_text())) if meta.exists() else None


def write(sweep_dir: Path, tokens: np.ndarray, spec: DataSpec) -> None:
    """Store the corpus in the sweep directory (atomically), unless it is already there."""
    if (sweep_dir / META_FILE).exists():
        return
    tmp = sweep_dir / (TOKEN_FILE + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, tokens)
    os.replace(tmp, sweep_dir / TOKEN_FILE)
    (sweep_dir / META_FILE).write_text(json.dumps(asdict(spec), indent=1))


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
