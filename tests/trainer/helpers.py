"""Helpers shared by the trainer tests."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

import grain
from array_record.python.array_record_module import ArrayRecordReader

from trainer import config as config_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# A model small enough that a CPU step takes some tens of milliseconds; resume and device
# equivalence do not depend on size. Records stay 1024 tokens (the data contract). Dropout is on so
# that the per-step dropout keys are part of what resume must reproduce.
MINI = ["model.num_layers=1", "model.width=32", "model.num_heads=2", "model.mlp_dim=64", "model.dropout=0.1"]


def overrides(data_dir, *extra: str) -> list[str]:
    return [f"data_dir={data_dir}", "progress=false", *extra]


def make_config(data_dir, *extra: str, preset: str = "tiny") -> config_lib.Config:
    return config_lib.load_config(preset, overrides(data_dir, *extra))


def subprocess_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cli(args: list[str]) -> list[str]:
    """The command line of ``python -m trainer.train ARGS``."""
    return [sys.executable, "-m", "trainer.train", *args]


def run_cli(args: list[str], timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(args), cwd=REPO_ROOT, env=subprocess_env(**extra_env), capture_output=True, text=True, timeout=timeout
    )


def append_later_rows(sample_dir, dataset, folder, rows: int = 1000) -> None:
    """A real ``pretokenize --append`` into ``dataset``: the bundled sample's first ``rows`` rows again, one
    day later (new measurements of sources the sample holds), written as ``folder/day2.parquet``."""
    import datetime

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from beam_pipelines.pretokenize import pipeline as pretokenize

    table = pq.read_table(pathlib.Path(sample_dir) / "part-00000-of-00004.parquet").slice(0, rows)
    later = pc.add(table["event_time"], pa.scalar(datetime.timedelta(days=1), pa.duration("us")))
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.set_column(table.schema.get_field_index("event_time"), "event_time", later),
                   folder / "day2.parquet")
    args = ["--input", str(folder / "*.parquet"), "--output", str(dataset), "--direct_running_mode=in_memory"]
    assert pretokenize.run([*args, "--append"]) == 0


def record_hashes(tokens) -> list[str]:
    """sha1 of each (L,) row of a (B, L) token array, as the records' bytes on disk (little-endian uint16)."""
    return [hashlib.sha1(row.astype("<u2").tobytes()).hexdigest() for row in tokens]


def split_hashes(dataset, split: str) -> list[str]:
    """sha1 of each record of ``split`` of an opened dataset, in file order."""
    source = grain.sources.ArrayRecordDataSource(dataset.files(split))
    return [hashlib.sha1(source[i]).hexdigest() for i in range(len(source))]


def damage_one_record(path) -> int:
    """Flip one byte in the middle of ``path``; returns the record that no longer reads."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
    bad = []
    for i in range(reader.num_records()):
        try:
            reader.read([i])
        except Exception:  # noqa: BLE001 - riegeli's error
            bad.append(i)
    assert len(bad) == 1, bad
    return bad[0]
