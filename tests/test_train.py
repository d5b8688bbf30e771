import json
import math

import numpy as np
import pytest
import torch

from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.data import Batches, load_tokens
from mupbench.train import train


@pytest.fixture(scope="module")
def tokens(corpus_file):
    return load_tokens(str(corpus_file))[0]


def spec(lr, **train_kw):
    model = ModelConfig(width=32, depth=1, head_dim=8, base_width=16)
    tc = TrainConfig(lr=lr, steps=20, warmup=2, batch_size=4, seq_len=32, eval_every=10, eval_tokens=256, **train_kw)
    return RunSpec("baseline", model, tc, DataSpec("test", "0" * 64, 0, 256))


def test_cpu_training_is_bit_for_bit_deterministic(tokens):
    torch.set_num_threads(1)
    a, b = train(spec(2**-6), tokens), train(spec(2**-6), tokens)
    assert a["status"] == "ok" and a["final_val_loss"] < math.log(256)
    assert a["final_val_loss"] == b["final_val_loss"]
    assert [c[2] for c in a["curve"]] == [c[2] for c in b["curve"]]


def test_batches_do_not_depend_on_width_or_lr(tokens):
    b1 = Batches(tokens, 4, 32, steps=5, eval_tokens=256, seed=(0, 0))
    b2 = Batches(tokens, 4, 32, steps=5, eval_tokens=256, seed=(0, 0))
    assert torch.equal(b1.train_batch(3)[0], b2.train_batch(3)[0])
    assert not torch.equal(b1.train_batch(3)[0], b1.train_batch(4)[0])
    x, y = b1.train_batch(0)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert len(b1.val) * 9 < len(b1.train) * 1.1  # about one tenth held out


def test_divergence_is_a_result(tokens):
    result = train(spec(2.0**4), tokens)
    assert result["status"] == "diverged"
    assert result["final_val_loss"] == math.inf
    assert result["steps_done"] <= 20


def test_lion_and_decay_forms_train(tokens):
    for kw in ({"optimizer": "lion"}, {"weight_decay": 0.1}, {"weight_decay": 1e-4, "weight_decay_mode": "independent"},
               {"schedule": "wsd"}):
        r = train(spec(2**-9, **kw), tokens)
        assert r["status"] == "ok" and np.isfinite(r["final_val_loss"]), kw


def test_a_seed_is_a_replica_over_one_held_out_set(tokens):
    """Seed k draws its own training windows; validation is the same windows for every seed and batch size, and a
    fixed number of tokens."""
    b0, b1 = Batches(tokens, 4, 32, 5, 512, (0, 0)), Batches(tokens, 4, 32, 5, 512, (0, 1))
    assert not torch.equal(b0.train_batch(0)[0], b1.train_batch(0)[0])
    big = Batches(tokens, 16, 32, 5, 512, (0, 1))
    def val(b):
        return torch.cat([x for x, _ in b.val_batches()])
    assert torch.equal(val(b0), val(b1)) and torch.equal(val(b0), val(big))
    assert val(b0).numel() == 512
    a, b = train(spec(2**-6, seed=0), tokens), train(spec(2**-6, seed=1), tokens)
    assert a["final_val_loss"] != b["final_val_loss"]


def test_the_run_record_names_the_kernels_and_the_triton_configs_it_ran(monkeypatch):
    from mupbench import kernels
    from mupbench import train as train_module

    monkeypatch.setattr(kernels, "configs_used", lambda: {})
    assert train_module._kernels_used(torch.device("cpu")) == "torch"
    used = {"flash_attn_fwd": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8}}
    monkeypatch.setattr(kernels, "configs_used", lambda: used)
    monkeypatch.setattr(kernels, "backend", lambda device: "triton")
    record = train_module._kernels_used(torch.device("cuda"))
    assert record.startswith("triton ") and json.loads(record.split(" ", 1)[1]) == used
