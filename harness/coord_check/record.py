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
from torch.func import functional_call

from mupbench.errors import UserError

# A low-rank batch (few tokens): Adam's update of a layer then acts coherently on the batch's own inputs, so a layer's
# update ΔW·x keeps its size under μP instead of shrinking as width^-1/2 (see the package docstring for measurements).
BATCH_TEXT = Path(__file__).with_name("batch_text.txt")
BATCH_SIZE, SEQ_LEN = 2, 16


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def _own_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight whose update ΔW·x is recorded: a direct `weight` of ≥ 2 dims on a module with no parameterised
    children (nn.Linear and its subclasses, nn.Embedding, Conv1D-style layers of one's own)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or weight.ndim < 2 or getattr(module, "max_norm", None) is not None:
        return None
    if any(True for child in module.children() for _ in child.parameters()):
        return None
    return weight


class Recorder:
    """Forward hooks on every module (the model's own output is "logits"), plus the attention logits of every
    F.scaled_dot_product_attention call, named after the module that made it ("<module>.attn_logits").

    Every output is copied when it is made, so an in-place operation later in the forward (`y *= alpha`) does not
    change what was recorded. For each weight layer (see `_own_weight`) it also records ΔW·x_t: the module's own
    forward on its own inputs with the weight replaced by W_t − W_0 (and a bias by zero), so whatever the module does
    around its matmul — MuReadout's output multiplier, an input scale in a subclass — counts. W_0 is snapshotted when
    the recorder is made, before any step.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        self.updates: dict[str, torch.Tensor] = {}
        self.sizes: dict[str, int] = {}
        self.scales: dict[str, tuple[int, float]] = {}
        self._pointers: dict[str, tuple[int, tuple]] = {}
        self._stack: list[str] = []
        self._busy = 0  # > 0 while a layer's own update is computed: its hooks and attention calls are not recorded
        self._handles = []
        self._initial: dict[int, torch.Tensor] = {}
        for name, module in model.named_modules():
            label = name or "logits"
            weight = _own_weight(module)
            if weight is not None:
                self._initial[id(module)] = weight.detach().clone()
            self._handles.append(module.register_forward_pre_hook(self._enter(label)))
            self._handles.append(module.register_forward_hook(self._leave(label), with_kwargs=True))

    def _enter(self, label):
        def hook(module, args):
            if not self._busy:
                self._stack.append(label)

        return hook

    def _leave(self, label):
        def hook(module, args, kwargs, output):
            if self._busy:
                return
            self._stack.pop()
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            key = self._store(label, tensor)
            if id(module) in self._initial:
                update = self._own_update(module, args, kwargs)
                if update is not None and update.shape == tensor.shape:
                    self.updates[key] = update

        return hook

    @torch.no_grad()
    def _own_update(self, module: nn.Module, args, kwargs) -> torch.Tensor | None:
        """ΔW·x through the module's own forward: weight ← W_t − W_0, bias ← 0, everything else as it is."""
        weights = {"weight": module.weight.detach() - self._initial[id(module)]}
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            weights["bias"] = torch.zeros_like(module.bias)
        self._busy += 1
        try:
            out = _first_tensor(functional_call(module, weights, args, kwargs))
        except Exception:  # a forward that cannot run on a difference of weights: no own update for this layer
            return None
        finally:
            self._busy -= 1
        return None if out is None else out.detach().float().clone()

    def _store(self, label: str, tensor: torch.Tensor) -> str:
        key, n = label, 2
        while key in self.outputs:  # a module called twice in one forward
            key, n = f"{label}#{n}", n + 1
        self.outputs[key] = tensor.detach().float().clone()
        self._pointers[key] = (tensor.data_ptr(), tuple(tensor.shape))
        self.sizes[key] = int(tensor.shape[-1]) if tensor.ndim else 1
        return key

    def attention(self, original):
        def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
            out = original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                           scale=scale, **kwargs)
            if self._busy:
                return out
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
                name = self._store(f"{owner}.attn_logits" if owner != "logits" else "attn_logits", logits)
                self.sizes[name] = int(q.shape[-2])  # per query: as many logits as keys, whatever the width
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
        """(logits, outputs, updates): every module's output and, for weight layers, ΔW·x."""
        self.outputs, self.updates, self._pointers, self._stack = {}, {}, {}, []
        with self.active():
            logits = self.model(tokens)
        outputs, updates = self.outputs, self.updates
        root = outputs.get("logits")
        if root is not None:  # the readout is reported once, as "logits" (see _readout_scale)
            for k in [k for k in outputs if k != "logits" and outputs[k].shape == root.shape]:
                c = _readout_scale(outputs[k], root, self._pointers[k] == self._pointers["logits"])
                if c is None:
                    continue
                if k in updates:
                    updates["logits"] = updates.pop(k) * c
                del outputs[k]
        return logits, outputs, updates

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def _readout_scale(output: torch.Tensor, logits: torch.Tensor, same_storage: bool) -> float | None:
    """c when the model's logits are c × this module's output (the readout, then nothing or an output multiplier
    applied in place or not: `logits = self.lm_head(x) * alpha / width_mult`); None when the module is something else.
    The readout's own update ΔW·x is then measured as the model uses it: c · ΔW·x."""
    if torch.equal(output, logits):
        return 1.0
    norm = float((output * output).sum())
    if norm == 0.0:
        return 1.0 if same_storage else None
    c = float((output * logits).sum()) / norm
    close = torch.allclose(logits, c * output, rtol=1e-4, atol=1e-6 * float(logits.abs().max()))
    return c if close else None


def fixed_batch(vocab_size: int, batch_size: int = BATCH_SIZE, seq_len: int = SEQ_LEN, seed: int = 0) -> torch.Tensor:
    """One batch of byte-level text, the same for every width; ids mod vocab. Shape (batch_size, seq_len + 1): inputs
    are [:, :-1], targets [:, 1:]. The text is BATCH_TEXT, a frozen file (a copy of an earlier version of the model's
    source), so the check's numbers — and the evidence behind its threshold — do not move when the code is edited."""
    data = np.frombuffer(BATCH_TEXT.read_bytes(), dtype=np.uint8).astype(np.int64)
    need = seq_len + 1
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(data) - need, size=batch_size)
    return torch.from_numpy(np.stack([data[s : s + need] for s in starts]) % vocab_size)


def measure(model: nn.Module, groups: list[dict], batch: torch.Tensor, steps: int, lr: float, label: str = "model"):
    """Rows (step, module, size, mean|x|, mean|x − x_0|, mean|ΔW·x| or None) for steps 0..steps — forward on `batch`,
    record, then an AdamW step — and the attention scales seen ({module: (head dim, scale)})."""
    from mupbench.optim import build_optimizer

    opt = build_optimizer(model, lr, "adamw", groups=groups)
    recorder = Recorder(model)
    x, y = batch[:, :-1], batch[:, 1:]
    initial: dict[str, torch.Tensor] = {}
    rows = []
    model.eval()  # no dropout: every step sees the same function of the same batch
    try:
        for step in range(steps + 1):
            try:
                logits, outputs, updates = recorder.forward(x)
            except Exception as e:
                raise UserError(f"--model {label}: forward on token ids of shape {tuple(x.shape)} raised "
                                f"{type(e).__name__}: {e} (a shorter --seq-len fits a smaller block size)") from None
            if step == 0:
                initial = outputs
            for name, value in outputs.items():
                start = initial.get(name)
                delta = (value - start).abs().mean().item() if start is not None and start.shape == value.shape else math.nan
                update = updates[name].abs().mean().item() if name in updates else None
                rows.append((step, name, recorder.sizes[name], value.abs().mean().item(), delta, update))
            if step == steps:
                break
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        recorder.close()
    return rows, dict(recorder.scales)
