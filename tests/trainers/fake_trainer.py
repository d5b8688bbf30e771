"""A trainer that trains nothing: its loss is a parabola in log2 LR, and `--mode` makes it misbehave the ways a real
training script can (tests/test_trainers.py). Usable as a command and, through `train(run)`, as a callable."""
import argparse
import json
import math
import os
import sys
import time


def loss(width: int, log2_lr: float, seed: int) -> float:
    return 3.0 + 0.05 * (log2_lr + 6) ** 2 + 0.01 * seed - 0.1 * math.log2(width)


# `--mode by-lr` / FAKE_TRAINER_MODE=by-lr: each learning rate of a sweep misbehaves its own way
COMMAND_BY_LR = {-9: "crash", -8: "no-result", -7: "malformed", -6: "diverge", -5: "sleep", -4: "ok"}
CALLABLE_BY_LR = {-7: "raise", -6: "text", -5: "nan", -4: "ok"}


def train(run: dict):
    mode = os.environ.get("FAKE_TRAINER_MODE", "ok")
    if mode == "by-lr":
        mode = CALLABLE_BY_LR[round(run["log2_lr"])]
    if mode == "raise":
        raise RuntimeError("the trainer's own bug")
    if mode == "nan":
        return float("nan")
    if mode == "text":
        return "three point two"
    if mode == "sleep":
        time.sleep(30)
    print(f"training width {run['width']} at lr {run['lr']}")
    return {"final_val_loss": loss(run["width"], run["log2_lr"], run["seed"]), "curve": [[run["steps"], 3.5]]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="ok")
    p.add_argument("--result", default=None)
    args = p.parse_args()
    if args.mode == "by-lr":
        args.mode = COMMAND_BY_LR[round(math.log2(args.lr))]
    print("step 1: loss 5.0")
    value = loss(args.width, math.log2(args.lr), args.seed)
    doc = {"final_val_loss": value, "curve": [[10, value + 1], [20, value]]}
    if args.mode == "crash":
        print("CUDA error: an illegal memory access was encountered", file=sys.stderr)
        return 3
    if args.mode == "sleep":
        time.sleep(30)
    if args.mode == "diverge":
        doc = {"final_val_loss": "nan"}
    if args.mode == "no-result":
        return 0
    text = "{not json" if args.mode == "malformed" else json.dumps(doc)
    if args.result:
        with open(args.result, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
