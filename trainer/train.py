"""Train the decoder on a pretokenized dataset, with deterministic resume.

    python -m trainer.train CONFIG.yaml|PRESET [key=value ...]

Re-running the same command resumes from the latest complete checkpoint in ``workdir``. With
``stop_at=N`` the run stops cleanly after step N with a checkpoint, as a preemption would; SIGTERM does
the same after the current step. On CPU a resumed run's per-step losses are bit-identical to an
uninterrupted run's: the parameters, optimizer state, step, RNG key and Grain iterator state are all in
the checkpoint, dropout keys are derived from (key, step), and every batch is a function of its index.
"""

# This module is the CLI (run, thin) and the loop (train_and_evaluate); the docstring above is the CLI's
# --help. The pure step functions are in trainer.steps, the optimizer and a fresh state in
# trainer.train_state, the dataset version and the resume checks in trainer.resume, checkpoints in
# trainer.checkpoint, the log in trainer.metrics_log, SIGTERM in trainer.preemption.

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from beam_pipelines.common.cli import option_names_in
from beam_pipelines.common.errors import InputError, UsageError, report
from beam_pipelines.common.tricks import keep_freed_memory_for_xla
from trainer import augment, data
from trainer import model as model_lib
from trainer.checkpoint import Checkpointer
from trainer.config import Config, ConfigError, config_keys, load_config
from trainer.eval_stream import eval_batches
from trainer.metrics_log import MetricsLog
from trainer.preemption import StopRequest
from trainer.record_reader import DataReadError
from trainer.resume import DataBinding, check_resumable, choose_data_version, stream_segments
from trainer.steps import make_eval_step, make_train_step
from trainer.train_state import init_state, make_optimizer
from trainer.train_stream import Segment, train_iterator

CHECKPOINT_DIR = "checkpoints"


def _global_batch(batch: dict, sharding: NamedSharding) -> dict:
    """Host-local numpy batch -> global jax arrays sharded along the batch axis."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def evaluate(config: Config, dataset: data.Dataset, eval_step, params, batch_sharding) -> dict:
    """Loss on ``config.eval_split``, overall and per field kind (``eval_loss_<kind>``)."""
    pcount, pindex = jax.process_count(), jax.process_index()
    global_bs = config.eval_batch_size or config.batch_size
    sums = None
    for batch in eval_batches(
        dataset,
        config.eval_split,
        batch_size=global_bs // pcount,
        max_batches=config.eval_batches,
        process_index=pindex,
        process_count=pcount,
    ):
        out = eval_step(params, _global_batch(batch, batch_sharding))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
        return {}
    sums = jax.device_get(sums)
    result = {
        "eval_loss": float(sums["loss_sum"] / max(sums["weight_sum"], 1.0)),
        "eval_tokens": int(sums["weight_sum"]),
    }
    for i, name in enumerate(augment.KIND_NAMES):
        if sums["kind_weight_sum"][i] > 0:
            result[f"eval_loss_{name}"] = float(sums["kind_loss_sum"][i] / sums["kind_weight_sum"][i])
    return result


def _open_run_dataset(
    config: Config, saved: dict | None, start: int | None
) -> tuple[data.Dataset, DataBinding, list[Segment]]:
    """The dataset a run reads, opened (staged, checked) at the version :func:`trainer.resume.choose_data_version`
    picks for it (``saved``: the meta of checkpoint ``start``, None for a fresh run), the version binding, and
    the stream's segments."""
    manifest = data.read_dataset_manifest(config.data_dir)
    binding = choose_data_version(config, manifest, saved, start)
    if jax.process_count() > 1:
        # "The latest" is read by every host; an append landing meanwhile must not split them: process 0's
        # choice is everyone's (the checkpoint, hence the earlier segments, is the same on every host).
        agreed = int(multihost_utils.broadcast_one_to_all(np.int32(binding.version)))
        if agreed != binding.version:  # read again: versions are only added, so this host now sees it too
            manifest = data.read_dataset_manifest(config.data_dir)
            binding = choose_data_version(dataclasses.replace(config, data_version=agreed), manifest, saved, start)
    dataset = data.open_dataset(config.data_dir, dataclasses.replace(config, data_version=binding.version))
    return dataset, binding, stream_segments(dataset, binding, config.train_split)


def train_and_evaluate(config: Config, workdir: str | None = None) -> dict:
    """Train (or resume) until ``config.last_step``; returns a summary (final step, loss, eval metrics)."""
    workdir = os.path.abspath(workdir or config.workdir)
    config = dataclasses.replace(config, workdir=workdir)
    os.makedirs(workdir, exist_ok=True)
    primary = jax.process_index() == 0
    pcount, pindex = jax.process_count(), jax.process_index()

    # The dataset version comes first: a resumed run reads (and stages, and checks) its checkpoint's version only.
    ckpt = Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR), keep=config.keep_checkpoints, async_save=config.async_checkpointing
    )
    start = ckpt.latest_step()
    saved = ckpt.read_meta(start) if start is not None else None
    dataset, binding, segments = _open_run_dataset(config, saved, start)
    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    eval_bs = config.eval_batch_size or config.batch_size
    for name, bs in (("batch_size", config.batch_size), ("eval_batch_size", eval_bs)):
        if bs % len(devices) or bs % pcount:
            raise ConfigError(f"{name} {bs} must be divisible by {len(devices)} devices and {pcount} processes")

    # Model and optimizer, created directly with replicated sharding.
    abstract_model = nnx.eval_shape(lambda: model_lib.create(config.model, config.seed))
    graphdef, _ = nnx.split(abstract_model)
    n_params = model_lib.count_params(config.model)
    tx, schedule = make_optimizer(config)
    fresh_state = functools.partial(init_state, config, tx)
    abstract_state = jax.eval_shape(fresh_state)
    state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, state_sharding
    )

    iterator = train_iterator(dataset, config, process_index=pindex, process_count=pcount, segments=segments)
    meta = {
        # The config as read: data_version is the version read (evaluate and predict default to it).
        "config": dataclasses.replace(config, data_version=dataset.version).to_dict(),
        "fingerprint": dataset.fingerprint,  # of that version
        "data_version": dataset.version,
        "data_segments": [sg.to_dict() for sg in segments],  # which version the stream read from which step
        "params": n_params,
        "augment_scheme": augment.AUGMENT_SCHEME,
    }

    if start is not None:
        check_resumable(config, saved, start, workdir, warn=primary)
        state, iterator_state = ckpt.restore(start, abstract_state)
        iterator.set_state(iterator_state)
    else:
        state = jax.jit(fresh_state, out_shardings=state_sharding)()
    step = int(jax.device_get(state["step"]))
    if primary:
        print(
            f"ping-llm trainer: {n_params:,} parameters, {len(devices)} device(s) x {pcount} process(es) "
            f"({jax.default_backend()}), dataset {dataset.fingerprint[:12]} (version {dataset.version} of "
            f"{dataset.latest_version}), "
            + (f"resuming from step {step}" if start is not None else "starting fresh"),
            flush=True,
        )
        if binding.moved_from is not None:
            before, after = segments[-2].records, segments[-1].records
            print(
                f"data: moving the run from dataset version {binding.moved_from} ({before:,} {config.train_split} "
                f"records) to version {dataset.version} ({after:,} records, {after - before:+,}) from step "
                f"{step + 1}: from there on batches come from a new shuffle of all {after:,} records (the rest "
                f"of the current epoch over version {binding.moved_from} is not read)",
                flush=True,
            )

    log = MetricsLog(workdir, step, primary)
    train_step = jax.jit(
        make_train_step(graphdef, tx, schedule, config),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(
        make_eval_step(graphdef), in_shardings=(state_sharding["params"], batch_sharding), out_shardings=replicated
    )

    last_step = config.last_step
    tokens_per_step = config.batch_size * config.seq_len
    summary: dict = {"start_step": step, "params": n_params}
    record: dict = {}
    progress = None
    if primary and config.progress and step < last_step:
        progress = tqdm(total=last_step, initial=step, desc="train", dynamic_ncols=True, file=sys.stderr)

    t_last, steps_since, data_wait = time.perf_counter(), 0, 0.0
    with StopRequest() as stop:
        while step < last_step:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except DataReadError:
                ckpt.close()  # the last checkpoint is complete on disk before the error ends the run
                log.close()
                if hasattr(iterator, "close"):
                    iterator.close()  # stop the worker processes now, not at interpreter exit
                raise
            data_wait += time.perf_counter() - t0
            state, metrics = train_step(state, _global_batch(batch, batch_sharding))
            step += 1
            steps_since += 1
            is_eval = step == config.steps or (config.eval_every and step % config.eval_every == 0)
            preempted = stop.agreed(step % config.log_every == 0)
            stopping = step == last_step or preempted
            if step % config.log_every == 0 or is_eval or stopping:
                metrics = jax.device_get(metrics)
                now = time.perf_counter()
                elapsed = now - t_last
                record = {
                    "step": step,
                    "loss": float(metrics["loss"]),
                    "learning_rate": float(metrics["learning_rate"]),
                    "grad_norm": float(metrics["grad_norm"]),
                    "tokens_per_sec": tokens_per_step * steps_since / elapsed,
                    "nonpad_fraction": float(metrics["target_tokens"]) / tokens_per_step,
                    "data_wait_fraction": data_wait / elapsed,
                    "data_version": dataset.version,
                }
                if is_eval:
                    record.update(evaluate(config, dataset, eval_step, state["params"], batch_sharding))
                log.write(record)
                if progress is not None:
                    progress.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                t_last, steps_since, data_wait = time.perf_counter(), 0, 0.0
            if progress is not None:
                progress.update(1)
            if step % config.checkpoint_every == 0 or stopping:
                ckpt.save(step, state, iterator.get_state(), meta)
            if preempted:
                break
    if progress is not None:
        progress.close()
    ckpt.close()
    log.close()
    if hasattr(iterator, "close"):
        iterator.close()
    summary.update({"step": step, **{k: v for k, v in record.items() if k != "step"}})
    return summary


def _maybe_initialize_distributed() -> None:
    """Multi-host: ``jax.distributed.initialize`` when the launch script exported coordinator settings."""
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        return
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )


def _refuse_options(argv: list[str]) -> None:
    """The CLI takes a config and ``key=value`` overrides, no option: ``--workdir=w`` (a habit from the
    jobs) is one ``error:`` line naming it and the closest config key, before anything is read."""
    for name in option_names_in(argv):
        close = difflib.get_close_matches(name.lstrip("-"), config_keys(), n=1, cutoff=0.6)
        hint = f"did you mean the override {close[0]}=...?" if close else "overrides are key=value, e.g. steps=100"
        raise UsageError(f"unrecognized option {name} ({hint})")


def run(argv: list[str] | None = None) -> int:
    """CLI: ``python -m trainer.train CONFIG [key=value ...]``.

    Returns the exit code (``beam_pipelines.common.errors``): 0 done; 2 for a bad config or override, a
    missing or incomplete dataset, or a resume refused because the config or dataset changed, each one
    ``error:`` line; 1 for a data file found damaged during training (one ``error:`` line naming the file
    and record; the last checkpoint stays). Any other failure during training raises (exit 1).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0 if argv else 2
    keep_freed_memory_for_xla()  # before JAX starts its backend (the function says why)
    try:
        _refuse_options(argv)
        config = load_config(argv[0], argv[1:])
        _maybe_initialize_distributed()
        summary = train_and_evaluate(config)
    except (UsageError, InputError) as err:  # ConfigError, ResumeError, DatasetError
        return report(err)
    except DataReadError as err:  # a damaged data file met during training: exit 1, checkpoints kept
        return report(err)
    if jax.process_index() == 0:
        print(json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float, str))}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run())
