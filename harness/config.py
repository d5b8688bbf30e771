"""Configuration: the model, the training recipe, the data, and a run spec that combines them under one hash.

Everything a run depends on is a field here, so a run's identity is the hash of its resolved spec: the same spec is
the same run, and a finished run is never trained twice.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field

from mupbench.errors import UserError

ACTIVATIONS = ("relu", "gelu", "swiglu", "squared_relu")
NORM_GAINS = ("none", "scalar", "vector")
QUERY_INITS = ("normal", "zero")
UNEMBEDDING_INITS = ("default", "mup", "sp", "zero")
ATTENTION_SCALES = ("inv_d", "inv_sqrt_d")
EMBEDDING_LRS = ("default", "inv_wm")  # "default": the parameterization's rule (α); "inv_wm": α / wm
OPTIMIZERS = ("adamw", "lion", "muon")
WEIGHT_DECAY_MODES = ("coupled", "independent", "mup_adamw")
WEIGHT_DECAY_TENSORS = ("matrices", "all")  # "matrices": embedding, hidden matrices, unembedding; "all": + gains, biases
SCHEDULES = ("linear", "cosine", "wsd")

# Bumped when training semantics change, so runs stored by an older harness are not mistaken for new ones.
# 2: a seed is a whole replica (init and the order of training windows); validation is a fixed number of tokens.
RUN_SEMANTICS_VERSION = 2
# Fields added after the ablations' first version whose default keeps the earlier behaviour: they enter a run's
# identity only when they differ from that default, so a run's hash does not change when such a field is added.
ADDED_FIELD_DEFAULTS = {
    "model": {"attention_logit_mult": 1.0, "unembedding_bias": False, "embedding_lr": "default",
              "depth_parameterization": "standard", "base_depth": 2},
    "train": {"weight_decay_tensors": "matrices", "eps_scaling": False},
}
# A run of a user's own model (`--model`) carries extra["byo_model"] (harness/byo); of that entry, what changes the
# result: the factory's name, the SHA-256 of its source file, and whether it was re-initialised by the table.
BYO_SPEC_KEY = "byo_model"
BYO_IDENTITY_KEYS = ("factory", "sha256", "reinit")
# A run trained by a user's own trainer (`--trainer`, `--trainer-command`) carries extra["trainer"] (mupbench.trainers);
# its "identity" (the callable's name and its code's digests, or the command template and the digests of the files it
# names) enters the run's hash.
TRAINER_SPEC_KEY = "trainer"
# A run of an ablation defined outside mupbench (`--ablations`, an entry point) carries extra["ablation_code"]: the
# digest of the file defining it and every file of the user's that file imports (mupbench.byo.code). Its identity
# then holds the ablation's name and that digest: an edited ablation is a new run, and two ablations with the same
# config stay two.
ABLATION_CODE_KEY = "ablation_code"


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise UserError(f"{name}={value!r} is not one of: {', '.join(options)}")


_TYPES = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "int | None": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer or None"),
}


def _check_types(config) -> None:
    """Every field of a config dataclass holds a value of its declared type (an ablation returning "30" for an int
    field, or a non-finite float, is refused here rather than failing inside training)."""
    for f in dataclasses.fields(config):
        check = _TYPES.get(str(f.type))
        value = getattr(config, f.name)
        if check is not None and not check[0](value):
            raise UserError(f"{f.name} must be {check[1]}, got {value!r} ({type(value).__name__})")


def _in_range(name: str, value: float, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserError(f"{name} must lie in {interval}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only pre-norm transformer (Lingle's μ-transfer baseline) and every switch the ablations turn.

    Defaults are the baseline: RMSNorm without gains, no biases, RoPE, ReLU MLP of 4·width, fixed head dim,
    attention logits scaled by 1/head_dim, untied embedding and unembedding, μP with base width 128.
    """

    width: int
    depth: int = 2
    head_dim: int = 16
    vocab_size: int = 256
    parameterization: str = "mup"
    base_width: int = 128
    mlp_ratio: float = 4.0
    activation: str = "relu"
    norm_gains: str = "none"
    norm_eps: float = 1e-6
    projection_biases: bool = False
    embedding_norm: bool = False
    query_init: str = "normal"
    unembedding_init: str = "default"  # "default": what the parameterization says (μP 1/M, SP M^-1/2)
    attention_scale: str = "inv_d"
    attention_logit_mult: float = 1.0  # a constant on every attention logit, on top of attention_scale
    unembedding_bias: bool = False  # a bias on the unembedding (Lingle's b_u; LR α, zero init)
    embedding_lr: str = "default"  # "default": the parameterization's embedding LR (α); "inv_wm": α / wm
    kv_heads: int | None = None  # None: one K/V head per query head; 1: multi-query attention
    rope_base: float = 10000.0
    depth_parameterization: str = "standard"  # residual-branch scaling with depth (harness/parameterization.py)
    base_depth: int = 2  # L_base: the depth at which every depth rule is 1

    def __post_init__(self) -> None:
        from mupbench.parameterization import DEPTH_PARAMETERIZATIONS, PARAMETERIZATIONS

        _check_types(self)
        for name in ("width", "depth", "head_dim", "vocab_size", "base_width", "base_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if self.width % self.head_dim:
            raise UserError(
                f"width {self.width} is not divisible by head_dim {self.head_dim}: choose widths that are multiples of it"
            )
        _choice("parameterization", self.parameterization, tuple(PARAMETERIZATIONS))
        _choice("depth_parameterization", self.depth_parameterization, tuple(DEPTH_PARAMETERIZATIONS))
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("norm_gains", self.norm_gains, NORM_GAINS)
        _choice("query_init", self.query_init, QUERY_INITS)
        _choice("unembedding_init", self.unembedding_init, UNEMBEDDING_INITS)
        _choice("attention_scale", self.attention_scale, ATTENTION_SCALES)
        _choice("embedding_lr", self.embedding_lr, EMBEDDING_LRS)
        if not (isinstance(self.attention_logit_mult, (int, float)) and math.isfinite(self.attention_logit_mult)
                and self.attention_logit_mult > 0):
            raise UserError(f"attention_logit_mult must be a positive number, got {self.attention_logit_mult!r}")
        if self.kv_heads is not None and (self.kv_heads < 1 or self.heads % self.kv_heads):
            raise UserError(f"kv_heads={self.kv_heads} must divide the {self.heads} query heads")
        if not self.mlp_ratio > 0 or not self.norm_eps > 0 or not self.rope_base > 0:
            raise UserError("mlp_ratio, norm_eps and rope_base must be positive")

    def parameter_count(self) -> int:
        """An upper bound on the trainable parameters, from the shapes alone (gains counted even when absent)."""
        w, kv = self.width, self.n_kv_heads * self.head_dim
        ff = self.ff_width * (2 if self.activation == "swiglu" else 1)
        per_layer = 2 * w * w + 2 * w * kv + ff * w + self.ff_width * w + 2 * w
        if self.projection_biases:
            per_layer += 2 * w + 2 * kv + ff + w
        return 2 * self.vocab_size * w + self.depth * per_layer + w

    @property
    def heads(self) -> int:
        return self.width // self.head_dim

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def ff_width(self) -> int:
        """MLP hidden size: mlp_ratio·width; SwiGLU uses 2/3 of it per branch so its parameter count matches."""
        if self.activation == "swiglu":
            return max(1, round(self.mlp_ratio * self.width * 2 / 3))
        return max(1, round(self.mlp_ratio * self.width))

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width

    @property
    def depth_mult(self) -> float:
        return self.depth / self.base_depth


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe. `lr` is the base learning rate α; per-tensor rates come from the parameterization."""

    lr: float
    steps: int = 300
    warmup: int = 30
    batch_size: int = 16
    seq_len: int = 64
    optimizer: str = "adamw"
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    weight_decay_mode: str = "coupled"
    weight_decay_tensors: str = "matrices"  # which tensors decay: "matrices" (common practice) or "all" (Lingle's code)
    eps_scaling: bool = False  # Adam ε × the tensor's LR multiplier (Lingle's later code; Everett et al. 2024)
    schedule: str = "linear"
    decay_fraction: float = 0.2  # WSD: the share of steps spent decaying at the end
    final_lr_fraction: float = 1e-4  # schedules start warmup from, and decay to, this fraction of the peak
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_tokens: int = 8192  # the held-out set: the same evenly spaced windows for every run, whatever its batch size
    seed: int = 0  # a replica: the initialisation and the order of training windows
    data_seed: int = 0  # shifts the training-window order of every seed (a second, independent set of replicas)

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"learning rate must be a positive number, got {self.lr!r}")
        _check_types(self)
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.eval_tokens < self.seq_len:
            raise UserError(f"eval_tokens ({self.eval_tokens}) must be at least one sequence of seq_len {self.seq_len}")
        if self.seed < 0 or self.data_seed < 0:
            raise UserError(f"seeds must be >= 0, got seed {self.seed}, data_seed {self.data_seed}")
        if not 0 <= self.warmup <= self.steps:
            raise UserError(f"warmup ({self.warmup}) must lie between 0 and steps ({self.steps})")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("weight_decay_mode", self.weight_decay_mode, WEIGHT_DECAY_MODES)
        _choice("weight_decay_tensors", self.weight_decay_tensors, WEIGHT_DECAY_TENSORS)
        _choice("schedule", self.schedule, SCHEDULES)
        if self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        _in_range("beta1", self.beta1, 0, 1, high_open=True)
        _in_range("beta2", self.beta2, 0, 1, high_open=True)
        _in_range("final_lr_fraction", self.final_lr_fraction, 0, 1)
        if not self.eps > 0:
            raise UserError(f"eps must be > 0, got {self.eps!r}")
        if not self.grad_clip > 0:
            raise UserError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        for name in ("seed", "data_seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def log2_lr(self) -> float:
        return math.log2(self.lr)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


@dataclass(frozen=True)
class DataSpec:
    """Which tokens a run trains on: identified by content digest, so a moved file is the same data."""

    name: str  # "stdlib" or the path the user gave
    sha256: str
    n_tokens: int
    vocab_size: int


def wsd_decay_start(steps: int, warmup: int, decay_fraction: float) -> int:
    """The step at which a warmup–stable–decay run of `steps` starts its decay (never inside the warmup): the branch
    point of that duration in a duration sweep (harness/optim.py's schedule uses it)."""
    return max(warmup, steps - max(1, round(decay_fraction * steps)))


# What a sweep scales: the model's width, its depth, or the training length in tokens (steps × tokens per step). A
# verdict asks whether the optimal LR stays put along one of them; spec.extra["axis"] says which for a planned run.
AXES = ("width", "depth", "tokens")
AXIS_KEY = "axis"


def axis_value(spec: "RunSpec", axis: str) -> int:
    if axis == "width":
        return spec.model.width
    if axis == "depth":
        return spec.model.depth
    return spec.train.steps * spec.train.tokens_per_step


def spec_axis(spec: "RunSpec") -> str:
    return spec.extra.get(AXIS_KEY, "width")


def _without_added_defaults(fields: dict, section: str) -> dict:
    defaults = ADDED_FIELD_DEFAULTS[section]
    return {k: v for k, v in fields.items() if k not in defaults or v != defaults[k]}


@dataclass(frozen=True)
class RunSpec:
    """One training run, fully resolved. `ablation` and `parameterization` label it for analysis."""

    ablation: str
    model: ModelConfig
    train: TrainConfig
    data: DataSpec
    extra: dict = field(default_factory=dict)  # free-form labels that do not change training (e.g. suite)

    def identity(self) -> dict:
        """Everything that changes the result, as plain data.

        A run of a user's own model (`--model`, extra["byo_model"]) adds `model_source`: the factory's name, its source
        file's SHA-256 and the reinit flag. Built-in runs have no such entry, so their hashes are unchanged.
        """
        out = {
            "semantics": RUN_SEMANTICS_VERSION,
            "model": _without_added_defaults(dataclasses.asdict(self.model), "model"),
            "train": _without_added_defaults(dataclasses.asdict(self.train), "train"),
            "data": {"sha256": self.data.sha256, "vocab_size": self.data.vocab_size},
        }
        if BYO_SPEC_KEY in self.extra:
            entry = self.extra[BYO_SPEC_KEY]
            out["model_source"] = {k: entry[k] for k in BYO_IDENTITY_KEYS}
        if TRAINER_SPEC_KEY in self.extra:
            out["trainer"] = self.extra[TRAINER_SPEC_KEY]["identity"]
        if ABLATION_CODE_KEY in self.extra:
            out["ablation"] = {"name": self.ablation, "sha256": self.extra[ABLATION_CODE_KEY]["sha256"]}
        return out

    @functools.cached_property  # a spec is frozen; the planner asks for its hash many times per round
    def run_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {
            "ablation": self.ablation,
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
            "data": dataclasses.asdict(self.data),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, obj: dict) -> "RunSpec":
        return cls(
            ablation=obj["ablation"],
            model=ModelConfig(**obj["model"]),
            train=TrainConfig(**obj["train"]),
            data=DataSpec(**obj["data"]),
            extra=obj.get("extra", {}),
        )
