"""WSD duration families: a shorter run started from its family's checkpoint is the run trained from scratch."""
import json

import pytest
import torch

from mupbench import branches, data, directory, plan
from mupbench.devices import plan_workers
from mupbench.executors.local import LocalExecutor
from mupbench.sweep import run_sweep
from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig, wsd_decay_start
from mupbench.data import load_tokens, open_tokens
from mupbench.optim import schedule
from mupbench.store import Store
from mupbench.train import Trainer, train

STEPS = (24, 36, 48)  # decay starts 18, 27, 36 (warmup 4, decay fraction 0.25)
DATA = DataSpec("test", "0" * 64, 0, 256)


@pytest.fixture(scope="module")
def tokens(corpus_file):
    torch.set_num_threads(1)
    return load_tokens(str(corpus_file))[0]


def spec(steps, lr=2**-6, data=DATA, **train_kw):
    model = ModelConfig(width=16, depth=1, head_dim=8, base_width=16)
    kw = {"warmup": 4, "batch_size": 4, "seq_len": 32, "eval_every": 10, "eval_tokens": 256, "schedule": "wsd",
          "decay_fraction": 0.25}
    tc = TrainConfig(lr=lr, steps=steps, **{**kw, **train_kw})
    return RunSpec("baseline", model, tc, data)


def family(*steps, **kw):
    """The annotated specs, longest first (the order a sweep trains them in)."""
    return sorted(branches.annotate([spec(s, **kw) for s in steps]), key=lambda s: -s.train.steps)


def trained(specs, tokens, checkpoints):
    """steps → (result, number of steps trained in this call)."""
    out = {}
    for s in specs:
        calls = []
        result = train(s, tokens, checkpoints=checkpoints, on_step=lambda done, total, calls=calls: calls.append(done))
        out[s.train.steps] = result, len(calls)
    return out


@pytest.fixture(scope="module")
def scratch(tokens):
    return {n: train(spec(n), tokens) for n in STEPS}


def same_run(a, b):
    assert a["status"] == b["status"] and a["steps_done"] == b["steps_done"]
    assert a["final_val_loss"] == b["final_val_loss"]  # bit for bit
    assert a["curve"] == b["curve"]


def test_decay_start_is_where_the_schedule_leaves_the_peak():
    for steps in range(1, 70):
        for warmup in sorted({0, 1, 5, steps}):
            if warmup > steps:
                continue
            for fraction in (0.05, 0.2, 0.25, 0.5, 1.0):
                start = wsd_decay_start(steps, warmup, fraction)
                at_peak = [t for t in range(steps) if schedule(t, steps, warmup, "wsd", 1e-4, fraction) == 1.0]
                assert at_peak == list(range(warmup, min(start + 1, steps))), (steps, warmup, fraction)


def test_a_family_is_the_spec_without_its_length():
    assert branches.family_key(spec(24)) == branches.family_key(spec(48)) is not None
    assert branches.family_key(spec(24)) != branches.family_key(spec(24, lr=2**-7))
    assert branches.family_key(spec(24, schedule="linear")) is None
    annotated = branches.annotate([spec(24), spec(48), spec(24, lr=2**-7), spec(24, schedule="cosine")])
    assert [s.extra.get(branches.BRANCH_POINTS) for s in annotated] == [[18, 36], [18, 36], [18], None]
    assert [s.run_hash for s in annotated] == [s.run_hash for s in (spec(24), spec(48), spec(24, lr=2**-7),
                                                                   spec(24, schedule="cosine"))]
    long = annotated[1].run_hash
    assert branches.trunks(annotated) == {annotated[0].run_hash: long}
    assert branches.branch_order(annotated)[-1] == annotated[0]


def test_branch_runs_are_the_runs_from_scratch_and_train_only_their_decay(tokens, scratch, tmp_path):
    out = trained(family(*STEPS), tokens, tmp_path)
    for n in STEPS:
        same_run(out[n][0], scratch[n])
    assert {n: out[n][0]["resumed_from_step"] for n in STEPS} == {24: 18, 36: 27, 48: 0}
    starts = [wsd_decay_start(n, 4, 0.25) for n in STEPS]
    assert sum(calls for _, calls in out.values()) == max(starts) + sum(n - d for n, d in zip(STEPS, starts))
    assert sum(calls for _, calls in out.values()) == 48 + 6 + 9 < sum(STEPS)
    key = branches.family_key(spec(24))
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == ["step_18.pt", "step_27.pt", "step_36.pt"]


def test_a_damaged_checkpoint_is_passed_over(tokens, scratch, tmp_path):
    trained(family(*STEPS)[:1], tokens, tmp_path)  # the trunk leaves step 18, 27, 36
    folder = tmp_path / branches.family_key(spec(24))
    whole = (folder / "step_27.pt").read_bytes()
    (folder / "step_27.pt").write_bytes(whole[: len(whole) // 2])  # truncated
    (folder / "step_18.pt").write_bytes(b"not a checkpoint")
    out = trained(family(*STEPS)[1:], tokens, tmp_path)
    assert out[36][0]["resumed_from_step"] == 0  # both damaged: from scratch, and it writes them again …
    assert out[24][0]["resumed_from_step"] == 18  # … for the next run
    for n in (24, 36):
        same_run(out[n][0], scratch[n])
    assert sorted(p.name for p in folder.iterdir()) == ["step_18.pt", "step_27.pt", "step_36.pt"]

    (folder / "step_27.pt").write_bytes(whole[:100])
    again = trained([s for s in family(*STEPS) if s.train.steps == 36], tokens, tmp_path)
    assert again[36][0]["resumed_from_step"] == 18  # the intact earlier one
    same_run(again[36][0], scratch[36])


def test_a_diverging_trunk_leaves_the_shorter_runs_as_they_would_be(tokens, scratch, tmp_path, monkeypatch):
    lr = 2.0**4  # diverges within 10 steps: no checkpoint at all
    out = trained(family(*STEPS, lr=lr), tokens, tmp_path)
    assert out[48][0]["status"] == "diverged" and out[48][0]["steps_done"] < 18
    for n in (24, 36):
        same_run(out[n][0], train(spec(n, lr=lr), tokens))

    # a trunk that diverges between two branch points (at step 30): checkpoints at 18 and 27 only
    observe = Trainer.observe
    monkeypatch.setattr(Trainer, "observe", lambda self, loss: observe(self, loss) or self.step == 30)
    trunk = trained(family(*STEPS)[:1], tokens, tmp_path / "late")[48][0]
    monkeypatch.undo()
    assert trunk["status"] == "diverged" and trunk["steps_done"] == 30
    folder = tmp_path / "late" / branches.family_key(spec(24))
    assert sorted(p.name for p in folder.iterdir()) == ["step_18.pt", "step_27.pt"]
    out = trained(family(*STEPS)[1:], tokens, tmp_path / "late")
    assert out[36][0]["resumed_from_step"] == 27 and out[24][0]["resumed_from_step"] == 18
    for n in (24, 36):
        same_run(out[n][0], scratch[n])


def test_a_shorter_run_is_handed_out_only_after_its_trunk():
    dispatch = plan.Dispatch(branches.annotate([spec(n) for n in STEPS] + [spec(24, schedule="linear")]))
    finished = set()
    first = [dispatch.next(finished) for _ in range(3)]
    assert [s.train.steps for s in first[:2]] == [48, 24] and first[1].train.schedule == "linear"
    assert first[2] is None and len(dispatch.pending) == 2  # the two shorter WSD runs wait
    finished.add(first[0].run_hash)
    assert [dispatch.next(finished).train.steps for _ in range(2)] == [36, 24]
    assert plan.branch_cost(spec(24)) == plan.run_cost(spec(24)) * 6 / 24
    unbranched = plan.Dispatch(branches.annotate([spec(n) for n in STEPS]), branching=False)
    assert [unbranched.next(set()).train.steps for _ in range(3)] == [48, 36, 24]  # nothing waits without checkpoints


def test_a_sweep_trains_the_longest_run_first_and_removes_the_checkpoints(corpus_file, tmp_path):
    out = tmp_path / "sweep"
    data_spec, corpus = data.sweep_data(out, str(corpus_file), None, "uint16")
    directory.record_sweep(out, corpus, data_spec, "cpu-micro", "pr", {})
    specs = [spec(n, data=data_spec) for n in (24, 48, 36)] + [spec(24, data=data_spec, schedule="linear")]
    done = run_sweep(out, specs, LocalExecutor("cpu", 2), progress=False)
    assert done["trained"] == 4 and done["ok"] == 4
    assert not (out / branches.CHECKPOINT_DIR).exists()

    store = Store(out)
    runs = store.runs()
    store.close()
    at = dict(zip(runs["run_hash"], runs["finished_at"]))
    wsd = [s for s in specs if s.train.schedule == "wsd"]
    assert all(at[wsd[1].run_hash] < at[s.run_hash] for s in (wsd[0], wsd[2]))
    stored = json.loads(runs.loc[runs["run_hash"] == wsd[0].run_hash, "spec"].iloc[0])
    assert stored["extra"][branches.BRANCH_POINTS] == [18, 27, 36]
    tokens = open_tokens(out)
    torch.set_num_threads(plan_workers("cpu", 2).threads)  # as many threads as a worker had
    try:
        for s in wsd:
            loss = runs.loc[runs["run_hash"] == s.run_hash, "final_val_loss"].iloc[0]
            assert loss == train(s, tokens)["final_val_loss"]
    finally:
        torch.set_num_threads(1)

    again = run_sweep(out, specs, LocalExecutor("cpu", 2), progress=False)
    assert again["trained"] == 0 and again["ok"] == 4
