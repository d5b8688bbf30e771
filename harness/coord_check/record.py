"""Recording a coordinate check: every module's output, each weight layer's own update and every attention call's
logits, over a few optimizer steps on one fixed batch."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH_SIZE, SEQ_LEN = 8, 64


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


class Recorder:
    """Forward hooks on every module (the model's own output is "logits"), plus the attention logits of every
    F.scaled_dot_product_attention call, named after the module that made it ("<module>.attn_logits").

    For nn.Linear and nn.Embedding modules it also records (W_t − W_0)·x_t, the part of the output change that the
    module's own weight update makes (W_0 is snapshotted when the recorder is made, before any step).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        self.updates: dict[str, torch.Tensor] = {}
        self.scales: dict[str, tuple[int, float]] = {}
        self._stack: list[str] = []
        self._handles = []
        self._initial: dict[int, torch.Tensor] = {}
        for name, module in model.named_modules():
            label = name or "logits"
            if isinstance(module, (nn.Linear, nn.Embedding)) and module.weight is not None:
                self._initial[id(module)] = module.weight.detach().clone()
            self._handles.append(module.register_forward_pre_hook(self._enter(label)))
            self._handles.append(module.register_forward_hook(self._leave(label)))

    def _enter(self, label):
        def hook(module, args):
            self._stack.append(label)

        return hook

    def _leave(self, label):
        def hook(module, args, output):
            self._stack.pop()
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            key = self._store(self.outputs, label, tensor)
            w0 = self._initial.get(id(module))
            if w0 is not None and args and isinstance(args[0], torch.Tensor):
                with torch.no_grad():
                    delta_w = module.weight.detach() - w0
                    if isinstance(module, nn.Embedding):
                        update = F.embedding(args[0], delta_w)
                    else:
                        update = F.linear(args[0].detach().to(delta_w.dtype), delta_w)
                self.updates[key] = update.float()

        return hook

    @staticmethod
    def _store(into: dict, label: str, tensor: torch.Tensor) -> str:
        key, n = label, 2
        while key in into:  # a module called twice in one forward
            key, n = f"{label}#{n}", n + 1
        into[key] = tensor.detach().float()
        return key

    def attention(self, original):
        def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
            out = original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                           scale=scale, **kwargs)
            with torch.no_grad():
                q, k = query.float(), key.float()
                if k.shape[-3] != q.shape[-3] and q.shape[-3] % k.shape[-3] == 0:
                    k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
                effective = scale if scale is not None else q.shape[-1] ** -0.5
                logits = (q @ k.transpose(-2, -1)) * effective
                if is_causal:
                    t, s = logits.shape[-2:]
                    logits = logits[..., torch.ones(t, s, dtype=torch.bool, device=logits.device).tril()]
                elif isinstance(attn_mask, torch.Tensor) and attn_mask.dtype == torch.bool:
                    logits = logits[attn_mask.expand_as(logits)]
                owner = self._stack[-1] if self._stack else "attention"
                name = self._store(self.outputs, f"{owner}.attn_logits" if owner != "logits" else "attn_logits", logits)
                self.scales[name] = (int(q.shape[-1]), float(effective))
            return out

        return sdpa

    @contextlib.contextmanager
    def active(self):
        original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self.attention(original)
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original

    def forward(self, tokens: torch.Tensor):
        """(logits, outputs, updates): every module's output and, for weight layers, (W_t − W_0)·x."""
        self.outputs, self.updates, self._stack = {}, {}, []
        with self.active():
            logits = self.model(tokens)
        outputs, updates = self.outputs, self.updates
        root = outputs.get("logits")
        if root is not None:  # the module that produced the logits (the readout) is reported once, as "logits"
            same = [k for k, v in outputs.items()
                    if k != "logits" and v.data_ptr() == root.data_ptr() and v.shape == root.shape]
            for k in same:
                if k in updates:
                    updates["logits"] = updates.pop(k)
                del outputs[k]
        return logits, outputs, updates

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def fixed_batch(vocab_size: int, batch_size: int = BATCH_SIZE, seq_len: int = SEQ_LEN, seed: int = 0) -> torch.Tensor:
    """One batch of byte-level text (this package's model source), the same for every width; ids mod vocab."""
    from harness import model as model_module

    data = np.frombuffer(Path(model_module.__file__).read_bytes(), dtype=np.uint8).astype(np.int64)
    need = seq_len + 1
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - need, size=batch_size)
    return torch.from_numpy(np.stack([data[s : s + need] for s in starts]) % vocab_size)


def measure(model: nn.Module, groups: list[dict], batch: torch.Tensor, steps: int, lr: float):
    """Rows (step, module, mean|x|, mean|x − x_0|, mean|ΔW·x| or None) for steps 0..steps — forward on `batch`,
    record, then an AdamW step — and the attention scales seen ({module: (head dim, scale)})."""
    from harness.optim import build_optimizer

    opt = build_optimizer(model, lr, "adamw", groups=groups)
    recorder = Recorder(model)
    x, y = batch[:, :-1], batch[:, 1:]
    initial: dict[str, torch.Tensor] = {}
    rows = []
    model.eval()  # no dropout: every step sees the same function of the same batch
    try:
        for step in range(steps + 1):
            logits, outputs, updates = recorder.forward(x)
            if step == 0:
                initial = outputs
            for name, value in outputs.items():
                start = initial.get(name)
                delta = (value - start).abs().mean().item() if start is not None and start.shape == value.shape else math.nan
                update = updates[name].abs().mean().item() if name in updates else None
                rows.append((step, name, value.abs().mean().item(), delta, update))
            if step == steps:
                break
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        recorder.close()
    return rows, dict(recorder.scales)


