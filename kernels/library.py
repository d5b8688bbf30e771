"""Registering the Triton kernels as torch.library operators, so that `torch.compile(model, fullgraph=True)` traces
through them instead of breaking the graph.

Each kernel wrapper becomes an operator `mupbench::<name>` with a fake implementation (shapes, dtypes and strides of
its outputs, nothing computed: what compile tracing runs), and the forward operators get their backward through
`register_autograd`, the backward being an operator of its own. The backward operators have no autograd formula, so
differentiating a gradient (double backward, `create_graph=True`) raises instead of silently dropping
second-order terms.

On a GPU the operators are `torch.library.triton_op`s (Inductor can see the kernels inside and schedule around
them). Under TRITON_INTERPRET=1 they are plain `custom_op`s: triton_op traces its body, and the interpreter's kernels
cannot take fake tensors.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
NAMESPACE = "mupbench"


def _launcher(kernel):
    """`kernel` launchable inside an operator: `wrap_triton(kernel)` where it exists (torch ≥ 2.6), else itself."""
    wrap = getattr(torch.library, "wrap_triton", None)
    if wrap is None or INTERPRET:
        return kernel
    return wrap(kernel)


def launch(kernel, grid: tuple[int, ...], *args, **kwargs):
    return _launcher(kernel)[grid](*args, **kwargs)


def operator(name: str, fake: Callable) -> Callable[[Callable], object]:
    """Decorator: register `fn` as the operator mupbench::name with `fake` as its fake implementation."""
    triton_op = getattr(torch.library, "triton_op", None)

    def register(fn):
        if triton_op is not None and not INTERPRET:
            op = triton_op(f"{NAMESPACE}::{name}", mutates_args=())(fn)
        else:
            op = torch.library.custom_op(f"{NAMESPACE}::{name}", mutates_args=())(fn)
        op.register_fake(fake)
        return op

    return register


def refuse_16bit_in_interpreter(*tensors: torch.Tensor) -> str | None:
    """The interpreter has no bf16/fp16 arithmetic (a 16-bit tl.dot multiplies raw bit patterns): say so."""
    if INTERPRET and any(t is not None and t.dtype in (torch.bfloat16, torch.float16) for t in tensors):
        return ("16-bit inputs under TRITON_INTERPRET give wrong results (the interpreter has no bf16/fp16 "
                "arithmetic): test in float32")
    return None
