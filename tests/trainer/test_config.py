"""Config presets, overrides and parameter counts."""

from __future__ import annotations

import math

import pytest

from trainer import config as config_lib
from trainer.model import count_params, flops_per_token

PRESETS = {"tiny": 1e6, "20m": 20e6, "100m": 100e6, "300m": 300e6}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_parameter_count_within_ten_percent_of_its_name(preset):
    config = config_lib.load_config(preset)
    n = count_params(config.model)  # abstract: nothing is allocated
    assert abs(n - PRESETS[preset]) / PRESETS[preset] < 0.10, f"{preset}: {n:,} parameters"
    assert config.model.vocab_size == 267
    assert config.seq_len == 1024
    assert flops_per_token(config.model, config.seq_len) > 6 * n * 0.9


def test_100m_keeps_the_seed_table_shape():
    m = config_lib.load_config("100m").model
    assert (m.num_layers, m.width, m.num_heads, m.head_dim) == (12, 768, 12, 64)


def test_overrides_are_typed():
    config = config_lib.load_config(
        "tiny", ["steps=7", "learning_rate=1e-2", "stop_at=3", "augment=false", "model.width=64", "workdir=/tmp/x"]
    )
    assert config.steps == 7 and config.learning_rate == 0.01 and config.stop_at == 3
    assert config.augment is False and config.model.width == 64 and config.workdir == "/tmp/x"
    assert config_lib.load_config("tiny", ["stop_at=null"]).stop_at is None
    assert config_lib.load_config("tiny", ["learning_rate=1"]).learning_rate == 1.0  # int -> float
    assert config.last_step == 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("stepz=3", "unknown config key(s) stepz"),
        ("model.depth=3", "unknown config key(s) model.depth"),
        ("steps=abc", "steps: expected int"),
        ("augment=3", "augment: expected bool"),
        ("model.width=100", "heads of even size"),
        ("model.dtype=float16", "model.dtype"),
        ("model.attention=flash", "model.attention"),
        ("model.attention=cudnn", "model.attention=cudnn needs"),
        ("batch_size=0", "batch_size must be positive"),
        ("num_workers=-2", "num_workers must be >= 0, or -1 for one per core"),
        ("num_threads=-1", "num_threads must be >= 0"),
        ("checksum_cache=maybe", "checksum_cache: expected bool"),
        ("steps", "expected key=value"),
    ],
)
def test_bad_overrides_are_refused_clearly(override, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_lib.load_config("tiny", [override])


def test_a_config_error_is_a_usage_error_exit_2():
    from beam_pipelines.common.errors import UsageError, exit_code

    with pytest.raises(UsageError) as raised:
        config_lib.load_config("tiny", ["stepz=3"])
    assert exit_code(raised.value) == 2


def test_unknown_preset_lists_the_presets():
    with pytest.raises(config_lib.ConfigError, match="tiny"):
        config_lib.load_config("nope")


def test_every_field_has_a_comment():
    import inspect

    source = inspect.getsource(config_lib)
    for cls in (config_lib.Config, config_lib.ModelConfig):
        for field in cls.__dataclass_fields__:
            line = next(l for l in source.splitlines() if l.strip().startswith(f"{field}:"))
            assert "#" in line, f"{cls.__name__}.{field} has no comment"
    assert math.isclose(config_lib.load_config("tiny").learning_rate, 3e-3)


def test_saved_configs_without_the_field_embedding_key_predate_it():
    saved = config_lib.load_config("tiny").to_dict()
    assert config_lib.from_saved(saved).model.field_embedding is True
    del saved["model"]["field_embedding"]  # what checkpoints written before the field embedding hold
    old = config_lib.from_saved(saved)
    assert old.model.field_embedding is False
    assert config_lib.from_dict(saved).model.field_embedding is True  # a new run's default is unchanged
    assert not config_lib.same_architecture(old.model, config_lib.load_config("tiny").model)
    xla = config_lib.load_config("tiny", ["model.attention=xla"]).model
    assert config_lib.same_architecture(xla, config_lib.load_config("tiny").model)


def test_data_defaults_check_checksums_once_and_use_worker_processes():
    config = config_lib.load_config("tiny")
    assert config.verify_checksums and config.checksum_cache and config.num_workers == -1
