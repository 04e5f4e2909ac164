"""Training configuration: frozen dataclasses, YAML presets and ``key=value`` overrides.

A config is ``Config`` (run, data, optimizer, checkpointing) holding a ``ModelConfig``. Presets live in
``configs/{tiny,20m,100m,300m}.yaml``; any field can be overridden on the command line as ``key=value``
(``model.num_layers=2``, ``stop_at=null``), with the value parsed as YAML and checked against the field's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from beam_pipelines.common.errors import UsageError
from tokenizer import TOKENIZER_NAME, TokenizerMismatch, get_scheme

_DEFAULT_SCHEME = get_scheme(TOKENIZER_NAME)  # the defaults below are its (a config naming another takes that one's)

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


class ConfigError(UsageError):
    """A config file or override that does not fit the schema (exit code 2, as every bad option)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the decoder (see ``trainer/model.py``)."""

    vocab_size: int = _DEFAULT_SCHEME.vocab_size  # embedding rows and output classes; must equal the dataset's tokenizer
    num_layers: int = 4  # Transformer blocks
    width: int = 128  # residual stream width (d_model)
    num_heads: int = 4  # attention heads; width must be divisible by it
    mlp_dim: int = 448  # hidden width of the SwiGLU MLP (three width x mlp_dim matrices)
    dropout: float = 0.0  # dropout rate after attention and MLP (training only)
    dtype: str = "float32"  # compute dtype: float32 or bfloat16 (parameters are always float32)
    attention: str = "auto"  # training attention: xla, cudnn (flash attention) or auto (cudnn on a GPU in bf16)
    field_embedding: bool = True  # add a learned (block role, offset in block) embedding to every token
    rope_theta: float = 10_000.0  # RoPE base frequency
    max_seq_len: int = 1024  # longest seq_len this model is meant for (RoPE is computed per call)
    tokenizer: str = TOKENIZER_NAME  # tokenizer scheme whose field layout the field embedding follows (= the run's tokenizer)

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run. ``batch_size`` is global (all hosts and devices together)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # the architecture
    # Data
    data_dir: str = "out"  # pretokenized dataset (directory holding manifest.json); pretokenize writes ./out by default
    train_split: str = "train"  # split trained on
    eval_split: str = "val"  # split evaluated on
    seq_len: int = 1024  # tokens per record; must equal the manifest's seq_len
    tokenizer: str = TOKENIZER_NAME  # tokenizer scheme the model expects; must equal the manifest's
    tokenizer_version: int = _DEFAULT_SCHEME.version  # tokenizer version the model expects
    pad_id: int = _DEFAULT_SCHEME.pad_id  # padding id the model expects; must equal the manifest's
    augment: bool = True  # permute field blocks afresh on every read (deterministic in seed and read index)
    eval_order_share: float = 0.0  # with augment: share of measurements put in evaluation's order (addresses first, RTT last)
    verify_checksums: bool = True  # sha256 every data file against the manifest at start, once per dataset and host
    checksum_cache: bool = True  # remember a passed sha256 check (~/.cache/ping-llm); false: check on every start
    cache_dir: str = ""  # where an s3:// or gs:// data_dir is copied (verified) before use; "": ~/.cache/ping-llm
    data_version: int = 0  # dataset version read (pretokenize --append adds versions); 0: the latest when the run starts
    advance_data_version: bool = False  # on resume, move the run to data_version (0: the latest) from the next step
    num_workers: int = -1  # Grain prefetch processes; -1: one per usable core (at most 16); 0: threads only
    num_threads: int = 4  # Grain prefetch threads (in the training process, or in each worker process)
    prefetch_buffer: int = 8  # batches Grain keeps ready ahead of the trainer
    # Run
    workdir: str = "runs/default"  # checkpoints, metrics.jsonl and TensorBoard events
    seed: int = 0  # seeds parameters, dropout, shuffling and augmentation
    steps: int = 1000  # length of the learning-rate schedule and of the run
    stop_at: int | None = None  # stop cleanly after this step with a checkpoint (as a preemption would)
    batch_size: int = 8  # global batch size in records
    log_every: int = 10  # write metrics every this many steps
    progress: bool = True  # show a tqdm progress bar (primary host only)
    # Optimizer
    learning_rate: float = 3e-3  # peak learning rate
    min_learning_rate_ratio: float = 0.1  # final learning rate as a fraction of the peak (cosine decay target)
    warmup_steps: int = 100  # linear warmup to the peak (the first step already uses peak / warmup_steps)
    weight_decay: float = 0.1  # AdamW decoupled weight decay (not applied to norms and biases)
    adam_b1: float = 0.9  # AdamW beta1
    adam_b2: float = 0.95  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # global-norm gradient clipping threshold
    # Checkpoints and evaluation
    checkpoint_every: int = 500  # save every this many steps (and at the end and at stop_at)
    keep_checkpoints: int = 3  # keep the last N checkpoints
    async_checkpointing: bool = True  # write checkpoints in the background
    allow_fingerprint_change: bool = False  # allow resuming against a dataset with another fingerprint
    eval_every: int = 500  # evaluate on eval_split every this many steps (0: only at the end)
    eval_batches: int = 0  # batches per evaluation (0: the whole split)
    eval_batch_size: int = 0  # global eval batch size (0: batch_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def last_step(self) -> int:
        """The step this invocation ends at: ``stop_at`` when set (capped by ``steps``), else ``steps``."""
        return self.steps if self.stop_at is None else min(self.stop_at, self.steps)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check ``value`` against a field type (int, float, bool, str, X | None), converting int -> float."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], key)
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    name = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"{key}: expected {name}, got {value!r}")


def _build(cls, values: Mapping, prefix: str = ""):
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(types_), n=1, cutoff=0.6)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + u for u in unknown)}{hint}; "
            f"valid keys: {', '.join(prefix + k for k in sorted(types_))}"
        )
    kwargs = {}
    for name, value in values.items():
        typ = types_[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{name}: expected a mapping, got {value!r}")
            kwargs[name] = _build(typ, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, typ, prefix + name)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict:
    """``["a=1", "model.width=64"]`` -> nested dict with YAML-parsed values."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: cannot parse value: {err}") from None
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def resolve_preset(name_or_path: str) -> str:
    """A YAML path, or a preset name (``tiny``) looked up in ``configs/``."""
    if os.path.isfile(name_or_path):
        return name_or_path
    candidate = os.path.join(CONFIG_DIR, f"{name_or_path}.yaml")
    if os.path.isfile(candidate):
        return candidate
    presets = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
    raise ConfigError(f"no config file {name_or_path!r} and no preset of that name (presets: {', '.join(presets)})")


def config_keys(cls=None, prefix: str = "") -> list[str]:
    """Every key a config or override may set, dotted (``steps``, ``model.width``), sorted."""
    keys = []
    for name, typ in _field_types(Config if cls is None else cls).items():
        if dataclasses.is_dataclass(typ):
            keys.extend(config_keys(typ, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return sorted(keys)


def from_dict(values: Mapping) -> Config:
    """Build a :class:`Config` from a (nested) mapping; unknown keys and wrong types raise :class:`ConfigError`."""
    return _build(Config, values)


# Model keys that choose how a model is computed, not what: a run may resume, or a checkpoint be loaded,
# with another value.
MODEL_EXECUTION_KEYS = frozenset({"attention"})


def from_saved(values: Mapping) -> Config:
    """:func:`from_dict` for a config saved with a checkpoint, written by this or an earlier version.

    Checkpoints written before the field embedding existed have no ``model.field_embedding`` key: their
    model has none, so the key reads as false (the dataclass default, true, is for new runs).
    """
    values = dict(values)
    model = dict(values.get("model", {}))
    model.setdefault("field_embedding", False)
    values["model"] = model
    return from_dict(values)


def same_architecture(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether parameters of a model with config ``a`` fit one with config ``b`` and compute the same thing."""
    strip = lambda m: {k: v for k, v in dataclasses.asdict(m).items() if k not in MODEL_EXECUTION_KEYS}  # noqa: E731
    return strip(a) == strip(b)


def load_config(path_or_preset: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML preset or file, then apply ``key=value`` overrides."""
    values: dict = {}
    if path_or_preset is not None:
        with open(resolve_preset(path_or_preset)) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path_or_preset}: expected a mapping at the top level")
        values = dict(loaded)
    values = _scheme_defaults(_merge(values, parse_overrides(overrides)))
    config = from_dict(values)
    validate(config)
    return config


def _scheme_defaults(values: dict) -> dict:
    """A config naming a ``tokenizer`` gets that scheme's version, pad id, vocabulary size and field layout
    where it does not set them itself (a config of scheme v2 needs only ``tokenizer=v2``)."""
    name = values.get("tokenizer")
    if name is None:
        return values
    try:
        scheme = get_scheme(name)
    except TokenizerMismatch as err:
        raise ConfigError(f"tokenizer: {err}") from None
    values = dict(values)
    values.setdefault("tokenizer_version", scheme.version)
    values.setdefault("pad_id", scheme.pad_id)
    model = dict(values.get("model") or {})
    model.setdefault("vocab_size", scheme.vocab_size)
    model.setdefault("tokenizer", scheme.name)
    values["model"] = model
    return values


def replace(config: Config, **changes) -> Config:
    """``dataclasses.replace`` that also accepts ``model={...}`` as a dict of model changes."""
    if "model" in changes and isinstance(changes["model"], Mapping):
        changes["model"] = dataclasses.replace(config.model, **changes["model"])
    out = dataclasses.replace(config, **changes)
    validate(out)
    return out


def validate(config: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    m = config.model
    if m.width % m.num_heads or (m.width // m.num_heads) % 2:
        raise ConfigError(f"model.width {m.width} must split into {m.num_heads} heads of even size")
    if m.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"model.dtype must be float32 or bfloat16, got {m.dtype!r}")
    if m.attention not in ("auto", "xla", "cudnn"):
        raise ConfigError(f"model.attention must be auto, xla or cudnn, got {m.attention!r}")
    if m.attention == "cudnn" and m.dtype != "bfloat16":
        raise ConfigError("model.attention=cudnn needs model.dtype=bfloat16 (cuDNN flash attention is half precision)")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.tokenizer != config.tokenizer:
        raise ConfigError(f"model.tokenizer {m.tokenizer} differs from tokenizer {config.tokenizer} (leave model.tokenizer out)")
    if not 0.0 <= config.eval_order_share <= 1.0:
        raise ConfigError(f"eval_order_share must be in [0, 1], got {config.eval_order_share}")
    if config.seq_len > m.max_seq_len:
        raise ConfigError(f"seq_len {config.seq_len} exceeds model.max_seq_len {m.max_seq_len}")
    for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    if config.num_workers < -1:
        raise ConfigError(f"num_workers must be >= 0, or -1 for one per core, got {config.num_workers}")
    for name in ("warmup_steps", "eval_every", "eval_batches", "eval_batch_size", "num_threads"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(config, name)}")
    if config.data_version < 0:
        raise ConfigError(f"data_version must be >= 1, or 0 for the latest version, got {config.data_version}")
    if config.stop_at is not None and config.stop_at <= 0:
        raise ConfigError(f"stop_at must be positive, got {config.stop_at}")
