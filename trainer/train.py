"""Train the decoder on a pretokenized dataset, with deterministic resume.

    python -m trainer.train CONFIG.yaml|PRESET [key=value ...]

Re-running the same command resumes from the latest complete checkpoint in ``workdir``. With
``stop_at=N`` the run stops cleanly after step N with a checkpoint, as a preemption would; SIGTERM does
the same after the current step. On CPU a resumed run's per-step losses are bit-identical to an
uninterrupted run's: the parameters, optimizer state, step, RNG key and Grain iterator state are all in
the checkpoint, dropout keys are derived from (key, step), and every batch is a function of its index.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from beam_pipelines.common.cli import option_names_in
from beam_pipelines.common.errors import InputError, UsageError, report
from beam_pipelines.common.files import atomic_path
from beam_pipelines.dataset import DatasetError, select_version
from beam_pipelines.dataset import dataset_versions as contract_versions
from trainer import augment, data
from trainer import model as model_lib
from trainer.checkpoint import Checkpointer
from trainer.config import Config, ConfigError, config_keys, from_saved, load_config, same_architecture

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


# Keys that may change between a run and its resumption without changing what is computed.
_RESUME_FREE_KEYS = {
    "workdir", "stop_at", "progress", "log_every", "checkpoint_every", "keep_checkpoints", "async_checkpointing",
    "allow_fingerprint_change", "num_workers", "num_threads", "prefetch_buffer", "verify_checksums", "data_dir",
    "checksum_cache", "cache_dir",
    "eval_every", "eval_batches", "eval_batch_size",
    "data_version", "advance_data_version",  # the version is the checkpoint's; choose_data_version checks these
}


class ResumeError(UsageError):
    """A checkpoint that cannot be resumed with this config or dataset (exit code 2: change one or the workdir)."""


# ----------------------------------------------------------------------------------------------------------
# Dataset versions


@dataclasses.dataclass(frozen=True)
class DataBinding:
    """The dataset version a run reads, and the versions its stream read before (:class:`trainer.data.Segment`)."""

    version: int  # the version read from now on
    segments: tuple[tuple[int, int], ...]  # (first batch, version) of each segment, oldest first
    moved_from: int | None = None  # the version read before this invocation moved the run on (advance_data_version)


def choose_data_version(config: Config, manifest: dict, saved: dict | None, step: int | None) -> DataBinding:
    """Which version of the dataset (``manifest``: the whole manifest, every version) a run reads.

    A fresh run (``saved`` None) reads ``config.data_version``, 0 meaning the latest. A resumed run reads the
    version recorded in its checkpoint's meta (``saved``), whatever was appended since, provided that
    version's fingerprint is the recorded one; a checkpoint written before versions existed (no
    ``data_version``) reads the version whose fingerprint it recorded (version 1 of a dataset appended to
    since). Otherwise the resume is refused (``ResumeError``), unless ``allow_fingerprint_change``: then
    the run reads ``data_version`` (0: latest) with one segment, as before versions. With
    ``advance_data_version`` a resumed run moves on to ``data_version`` (0: the latest), from batch ``step``
    (the next step) on; never back. A ``data_version`` other than the checkpoint's without it is refused.
    """
    root = config.data_dir
    versions = contract_versions(manifest)
    latest = versions[-1]["version"]
    fingerprints = {v["version"]: v["fingerprint"] for v in versions}
    want = config.data_version or None
    if want is not None and want not in fingerprints:
        select_version(manifest, want, root=root)  # raises ManifestError naming the versions there are
    if saved is None:
        version = want or latest
        return DataBinding(version, ((0, version),))
    recorded, fingerprint = saved.get("data_version"), saved.get("fingerprint")
    if recorded is None:  # written before versions: find the version it was trained on
        recorded = next((v for v, fp in fingerprints.items() if fp == fingerprint), None)
        segments = ((0, recorded),)
    else:
        segments = tuple((int(s["start_batch"]), int(s["version"])) for s in saved.get("data_segments", ())) or (
            (0, recorded),
        )
    if recorded is None or fingerprints.get(recorded) != fingerprint:
        if not config.allow_fingerprint_change:
            now = (f"has no version {recorded}" if recorded is not None and recorded not in fingerprints
                   else f"has fingerprint {fingerprints[recorded]} at version {recorded}" if recorded is not None
                   else "has no version of that fingerprint")
            raise ResumeError(
                f"{config.workdir}: checkpoint {step} was trained on dataset {fingerprint}"
                + (f" (version {saved['data_version']})" if saved.get("data_version") else "")
                + f" but {root} {now} (versions {', '.join(f'{v}: {fp[:12]}' for v, fp in fingerprints.items())}); "
                "pass allow_fingerprint_change=true to resume anyway, or use another workdir"
            )
        version = want or latest
        return DataBinding(version, ((0, version),))
    if config.advance_data_version:
        target = want or latest
        if target < recorded:
            raise ResumeError(
                f"{config.workdir}: checkpoint {step} reads dataset version {recorded}; advance_data_version "
                f"moves a run to a newer version, not back to {target}"
            )
        if target > recorded:
            return DataBinding(target, (*segments, (int(step), target)), moved_from=recorded)
        return DataBinding(recorded, segments)
    if want is not None and want != recorded:
        raise ResumeError(
            f"{config.workdir}: checkpoint {step} reads dataset version {recorded} of {root}, not data_version={want}; "
            f"pass advance_data_version=true to move the run to version {want} from the next step, or "
            "data_version=0 to go on with the checkpoint's"
        )
    return DataBinding(recorded, segments)


def _segments(dataset: data.Dataset, binding: DataBinding, split: str) -> list[data.Segment]:
    """The binding's segments with each version's record count; checks that every earlier version's files
    are the first files of the version read (the contract: an append only adds files after them)."""
    files = [f["path"] for f in dataset._split(split)["files"]]  # DatasetError naming the splits when missing
    out = []
    for start, version in binding.segments:
        if version == dataset.version:
            out.append(data.Segment(start, version, dataset.num_records(split)))
            continue
        at = dataset.at_version(version)["splits"].get(split)
        if at is None:
            raise DatasetError(f"{dataset.root}: version {version} has no split {split!r}")
        earlier = [f["path"] for f in at["files"]]
        if files[: len(earlier)] != earlier:
            raise DatasetError(
                f"{dataset.root}: the {split} files of version {version} are not the first files of version "
                f"{dataset.version}; the manifest breaks the data contract (versions only add files)"
            )
        out.append(data.Segment(start, version, int(at["records"])))
    return out


# ----------------------------------------------------------------------------------------------------------
# Optimizer


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices (kernels, embedding) only; never on norm scales or biases (1-D leaves)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: Config) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warmup then cosine decay, after global-norm clipping."""
    warmup = min(config.warmup_steps, config.steps)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=config.learning_rate / max(warmup, 1),  # the first step already learns
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(config.steps, warmup + 1),
        end_value=config.learning_rate * config.min_learning_rate_ratio,
    )
    tx = optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(
            schedule,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )
    return tx, schedule


def init_state(config: Config, tx: optax.GradientTransformation) -> dict:
    """A fresh training state: parameters seeded by ``config.seed``, ``tx``'s optimizer state, step 0 and
    the RNG key dropout keys are derived from.

    Pure: the trainer jits it with output shardings; a checkpoint reader ``jax.eval_shape``s it for the
    shapes to restore into.
    """
    params = nnx.to_pure_dict(nnx.state(model_lib.create(config.model, config.seed), nnx.Param))
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "rng": jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),
    }


# ----------------------------------------------------------------------------------------------------------
# Steps


def token_losses(graphdef: nnx.GraphDef, params: Any, inputs: jax.Array, targets: jax.Array, dropout_key=None):
    """Per-token cross-entropy, (batch, seq) float32."""
    model = nnx.merge(graphdef, params)
    logits = model(inputs, dropout_key=dropout_key)  # (batch, seq, vocab)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (batch, seq)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule, config: Config):
    """The pure ``train_step(state, batch) -> (state, metrics)``; the caller jits it once."""
    use_dropout = config.model.dropout > 0

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        key = jax.random.fold_in(state["rng"], state["step"]) if use_dropout else None
        weights = batch["weights"]  # (batch, seq)
        total = weights.sum()

        def loss_fn(params):
            ce = token_losses(graphdef, params, batch["inputs"], batch["targets"], key)  # (batch, seq)
            return (ce * weights).sum() / jnp.maximum(total, 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "rng": state["rng"],
        }
        metrics = {
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": schedule(state["step"]),
            "target_tokens": total,
        }
        return new_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef):
    """``eval_step(params, batch) -> sums`` of weighted loss and weight, overall and per field kind."""

    def eval_step(params: Any, batch: dict) -> dict:
        ce = token_losses(graphdef, params, batch["inputs"], batch["targets"])  # (batch, seq)
        w = batch["weights"]  # (batch, seq)
        onehot = jax.nn.one_hot(batch["kinds"], augment.NUM_KINDS, dtype=jnp.float32)  # (batch, seq, kinds); -1 -> 0
        return {
            "loss_sum": (ce * w).sum(),
            "weight_sum": w.sum(),
            "kind_loss_sum": jnp.einsum("bs,bsk->k", ce * w, onehot),  # (kinds,)
            "kind_weight_sum": jnp.einsum("bs,bsk->k", w, onehot),  # (kinds,)
        }

    return eval_step


# ----------------------------------------------------------------------------------------------------------
# Logging


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per logged step) plus TensorBoard events; primary host only."""

    def __init__(self, workdir: str, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self.writer = None
        if not enabled:
            return
        # Keep only what the checkpoint we resume from has seen: a killed run may have logged steps
        # past its last checkpoint (and maybe half a line); they are replayed identically.
        kept = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    if record.get("step", 0) <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
        with atomic_path(self.path) as tmp, open(tmp, "w") as f:
            f.writelines(kept)
        self.file = open(self.path, "a")
        try:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            self.writer = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``."""
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------------------
# The loop


def _global_batch(batch: dict, sharding: NamedSharding) -> dict:
    """Host-local numpy batch -> global jax arrays sharded along the batch axis."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class _StopRequest:
    """SIGTERM (a scheduler's preemption) asks the loop to checkpoint after the current step and stop."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self, sync_point: bool) -> bool:
        """Whether to stop now. Hosts get the signal at different steps, so with several processes they
        only decide together, at sync points (log steps, which synchronise anyway): all stop or none."""
        if jax.process_count() == 1:
            return self.requested
        if not sync_point:
            return False
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def evaluate(config: Config, dataset: data.Dataset, eval_step, params, batch_sharding) -> dict:
    """Loss on ``config.eval_split``, overall and per field kind (``eval_loss_<kind>``)."""
    pcount, pindex = jax.process_count(), jax.process_index()
    global_bs = config.eval_batch_size or config.batch_size
    sums = None
    for batch in data.eval_batches(
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
    manifest = data.read_dataset_manifest(config.data_dir)
    binding = choose_data_version(config, manifest, saved, start)
    if pcount > 1:
        # "The latest" is read by every host; an append landing meanwhile must not split them: process 0's
        # choice is everyone's (the checkpoint, hence the earlier segments, is the same on every host).
        from jax.experimental import multihost_utils

        agreed = int(multihost_utils.broadcast_one_to_all(np.int32(binding.version)))
        if agreed != binding.version:  # read again: versions are only added, so this host now sees it too
            manifest = data.read_dataset_manifest(config.data_dir)
            binding = choose_data_version(dataclasses.replace(config, data_version=agreed), manifest, saved, start)
    dataset = data.open_dataset(config.data_dir, dataclasses.replace(config, data_version=binding.version))
    segments = _segments(dataset, binding, config.train_split)
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

    iterator = data.train_iterator(dataset, config, process_index=pindex, process_count=pcount, segments=segments)
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
        saved_scheme = saved.get("augment_scheme", "per-record shuffle and Generator (before hash-v1)")
        if saved_scheme != augment.AUGMENT_SCHEME:
            raise ResumeError(
                f"{workdir}: checkpoint {start} was written with the data-order and augmentation scheme "
                f"{saved_scheme!r}; this trainer shuffles and draws field orders with {augment.AUGMENT_SCHEME!r}, "
                "so resuming would silently change the data order inside the run. Start a new workdir"
            )
        saved_config = from_saved(saved.get("config", {}))
        if not same_architecture(saved_config.model, config.model):
            raise ResumeError(
                f"{workdir}: checkpoint {start} has model {saved_config.model}, config has {config.model}"
            )
        saved_values = saved_config.to_dict()
        changed = sorted(  # the model was compared above
            k for k, v in config.to_dict().items() if k not in _RESUME_FREE_KEYS | {"model"} and saved_values[k] != v
        )
        if changed and primary:
            print(f"warning: resuming with changed config keys {', '.join(changed)}; the data order and "
                  "schedule may differ from the run that wrote the checkpoint", file=sys.stderr)
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
        from tqdm import tqdm

        progress = tqdm(total=last_step, initial=step, desc="train", dynamic_ncols=True, file=sys.stderr)

    t_last, steps_since, data_wait = time.perf_counter(), 0, 0.0
    with _StopRequest() as stop:
        while step < last_step:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except data.DataReadError:
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
    try:
        _refuse_options(argv)
        config = load_config(argv[0], argv[1:])
        _maybe_initialize_distributed()
        summary = train_and_evaluate(config)
    except (UsageError, InputError) as err:  # ConfigError, ResumeError, DatasetError
        return report(err)
    except data.DataReadError as err:  # a damaged data file met during training: exit 1, checkpoints kept
        return report(err)
    if jax.process_index() == 0:
        print(json.dumps({k: v for k, v in summary.items() if isinstance(v, (int, float, str))}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run())
