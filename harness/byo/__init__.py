"""Bring your own model: run coordinate checks and LR sweeps on a team's own PyTorch model.

A model is named `path/to/file.py:factory` or `package.module:factory`, where `factory(width: int) -> nn.Module`
maps token ids (B, T) to logits (B, T, V). The harness needs to know, for every parameter, which μP rule applies;
it finds out the way microsoft/mup's set_base_shapes does: it builds the model at two widths (on the meta device, so
no memory is spent) and compares shapes. A dimension that differs scales with width. With fan_out the first dimension
and fan_in the rest (torch's Linear/Conv layout; nn.Embedding is (fan_in = vocab, fan_out = dim)):

    kind     what scales             example                     table role     μP init        μP LR
    matrix   fan_in and fan_out      attention/MLP projections   hidden         fan_in^-1/2    α / wm
    input    fan_out only            embedding, input projection embedding      1              α
    output   fan_in only             readout / unembedding       unembedding    1/fan_in       α / wm
    vector   a 1-D tensor of width   gains, biases               gain / bias    1 / 0          α
    fixed    nothing                 a scalar gain, vocab bias   gain / bias    (kept)         α

The roles are the parameterization table's (harness/parameterization.py), so SP and μP apply to a user's model by
the same rules as to the built-in one; nothing is duplicated here. wm = width / base width.

    loading.py   naming, importing and calling the factory (ModelSource)
    shapes.py    which role each parameter takes (infer)
    groups.py    initialisation, optimizer groups, run specs that carry the model (prepare, with_model)
    code.py      the content identity of a user's code: every file it imports, by SHA-256

Three ways a model can say more (documented in docs/your-model.md):

* `model.mup_parameter_groups(lr) -> list[dict]`: the model's own optimizer groups (torch param-group dicts with
  "params" and "lr", optionally "weight_decay") for base rate `lr`. Used as given under μP — this is how a team tests
  the LRs their training code really uses. Every trainable parameter must be in exactly one group.
* `model.mup_roles`: a dict (or a method returning one) from parameter name to a table role, overriding the inference
  for those parameters (e.g. a raw nn.Parameter laid out (fan_in, fan_out), or tied embeddings).
* Initialisation: by default the model's own init is trusted (a team wants to test *their* init) and only learning
  rates are set. `reinit=True` (`--reinit`) re-initialises every width-scaling tensor by the table instead.

Under `sp` the model's hook is not used: SP is one global LR (and, with --reinit, SP init), the counterexample.

A BYO run in a sweep carries `extra["byo_model"]` (the factory's location, its name, the digest of its code, and the
reinit flag); RunSpec.identity() hashes the name, digest and flag, so edited model code is a new run and the same code
is the same run from any directory. The digest covers the factory's file and every file of the user's it imports
(code.py: the same identity the ablations and trainers use); a file edited while the sweep runs stops it once
(mupbench.errors.CodeChanged) instead of storing the remaining runs as failed.
"""
from mupbench.byo.code import changed_files, changed_since, code_digest, code_identity
from mupbench.byo.groups import (
    HOOK_GROUPS,
    STORE_META_KEY,
    Prepared,
    Scale,
    build_for_spec,
    hook_sets_weight_decay,
    is_byo,
    model_entry,
    model_field_changes,
    parameter_groups,
    prepare,
    reinitialise,
    uses_hook,
    validate,
    with_model,
)
from mupbench.byo.loading import (
    ModelSource,
    call_factory,
    check_backward,
    check_forward,
    load_factory,
    resolve,
    source_from_entry,
)
from mupbench.byo.shapes import HOOK_ROLES, KIND_TEXT, TensorInfo, describe, infer, partner_width
from mupbench.config import BYO_SPEC_KEY as SPEC_KEY

__all__ = [
    "changed_files", "changed_since", "code_digest", "code_identity",
    "HOOK_GROUPS", "HOOK_ROLES", "KIND_TEXT", "SPEC_KEY", "STORE_META_KEY", "ModelSource", "Prepared", "Scale",
    "TensorInfo", "build_for_spec", "call_factory", "check_backward", "check_forward", "describe",
    "hook_sets_weight_decay", "infer",
    "is_byo", "load_factory", "model_entry", "model_field_changes", "parameter_groups", "partner_width", "prepare",
    "reinitialise", "resolve", "source_from_entry", "uses_hook", "validate", "with_model",
]
