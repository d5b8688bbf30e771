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

torch.compile's caches key on what an operator launches: torch finds the kernels by scanning the operator body's
source for `wrap_triton(<kernel>)` calls (older torch looks no deeper than the body itself), and the launch
configuration is part of the graph only when it is an argument of the operator. So every operator body launches its
kernels as `wrap_triton(_kernel)[grid](...)` itself (no helper in between), and the attention configuration comes in
as operator arguments (tests/test_kernels_library.py checks both).
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch

INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")
NAMESPACE = "mupbench"


def _identity(kernel):
    return kernel


# What the operator bodies call as `wrap_triton(kernel)[grid](...)`: torch's wrapper on a GPU (Inductor sees the
# kernel), the kernel itself under the interpreter or on a torch without wrap_triton.
wrap_triton = _identity if INTERPRET else getattr(torch.library, "wrap_triton", _identity)


class _Recorder:
    """Stands in for `wrap_triton(kernel)`: records `kernel[grid](*args, **kwargs)` instead of launching it."""

    def __init__(self, kernel, launches: list):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append((self.kernel, grid, args, kwargs))

        return record


@contextlib.contextmanager
def recorded_launches(*modules):
    """Inside the block, the operator bodies of `modules` record their launches (kernel, grid, args, kwargs) in the
    yielded list instead of running them: what the offline compile (kernels/tune.py) specialises, exactly as the JIT
    would see the arguments. The operators can then run on CPU tensors (nothing is launched)."""
    launches: list = []
    saved = [module.wrap_triton for module in modules]
    for module in modules:
        module.wrap_triton = lambda kernel: _Recorder(kernel, launches)
    try:
        yield launches
    finally:
        for module, original in zip(modules, saved):
            module.wrap_triton = original


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


def refuse_bf16_in_interpreter(*tensors: torch.Tensor) -> str | None:
    """The interpreter has no bf16 arithmetic (a bf16 tl.dot multiplies raw bit patterns): say so. fp16 works there
    (numpy has float16)."""
    if INTERPRET and any(t is not None and t.dtype == torch.bfloat16 for t in tensors):
        return ("bfloat16 inputs under TRITON_INTERPRET give wrong results (the interpreter has no bf16 arithmetic): "
                "test in float32 or float16")
    return None
