"""End-to-end training: deterministic resume (stop_at, SIGKILL), refusals, devices, and a pulse."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.net import free_port
from tests.trainer.helpers import (
    MINI,
    REPO_ROOT,
    cli,
    damage_one_record,
    make_config,
    overrides,
    run_cli,
    subprocess_env,
)
from trainer import metrics_log, resume, train

STEPS = 24
# Same schedule, data order and model for every run compared below; only where it stops differs.
# num_workers=0: the batches are the same with worker processes (test_train_stream.py), and each worker
# costs a run 1 to 1.6 s of CPU to start (it imports the trainer; docs/development.md). The runs a user
# starts and stops from outside (SIGKILL, SIGTERM, the cluster script) read through a worker process, as a
# user's run does, and must still match the reference.
RUN = [*MINI, f"steps={STEPS}", "batch_size=4", "warmup_steps=4", "log_every=1", "checkpoint_every=4",
       "eval_every=8", "eval_batches=1", "keep_checkpoints=2", "num_workers=0"]
WORKERS = "num_workers=1"


def _losses(workdir) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in metrics_log.read_metrics(str(workdir))]


def _evals(workdir) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_loss"]) for r in metrics_log.read_metrics(str(workdir)) if "eval_loss" in r]


@pytest.fixture(scope="module")
def reference(sample_dataset, tmp_path_factory):
    """An uninterrupted run of RUN."""
    workdir = tmp_path_factory.mktemp("reference")
    summary = train.train_and_evaluate(make_config(sample_dataset, *RUN), str(workdir))
    assert summary["step"] == STEPS and summary["start_step"] == 0
    return workdir


@pytest.mark.slow
def test_reference_run_logs_every_step(reference):
    records = metrics_log.read_metrics(str(reference))
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for key in ("loss", "learning_rate", "tokens_per_sec", "grad_norm"):
        assert all(key in r for r in records)
    assert abs(records[0]["loss"] - math.log(267)) < 0.05  # a fresh model is near uniform
    assert [s for s, _ in _evals(reference)] == [8, 16, 24]
    kinds = ("src_addr", "dst_addr", "rtt", "size", "errors", "timestamp", "msm_id", "role")
    assert all(f"eval_loss_{k}" in records[-1] for k in kinds)
    assert sorted(os.listdir(reference / "checkpoints")) == ["20", "24"]  # keep the last 2
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(reference / "tensorboard"))


@pytest.mark.slow
def test_resume_after_stop_at_is_bit_identical(sample_dataset, reference, tmp_path):
    first = train.train_and_evaluate(make_config(sample_dataset, *RUN, "stop_at=10"), str(tmp_path))
    assert first["step"] == 10
    assert (tmp_path / "checkpoints" / "10").is_dir()
    # A half-written checkpoint (as a crash mid-save leaves it) must never be picked up.
    junk = tmp_path / "checkpoints" / "16.orbax-checkpoint-tmp-1234567"
    junk.mkdir()
    (junk / "garbage").write_text("half written")
    second = train.train_and_evaluate(make_config(sample_dataset, *RUN), str(tmp_path))
    assert second["start_step"] == 10 and second["step"] == STEPS
    assert not junk.exists()
    assert _losses(tmp_path) == _losses(reference)  # exact, not approximate
    assert _evals(tmp_path) == _evals(reference)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(sample_dataset, reference, tmp_path):
    args = ["tiny", *overrides(sample_dataset, *RUN, WORKERS), f"workdir={tmp_path}"]
    proc = subprocess.Popen(
        cli(args), cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    checkpoints = tmp_path / "checkpoints"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if checkpoints.is_dir() and any(name.isdigit() and int(name) >= 8 for name in os.listdir(checkpoints)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(int(n) for n in os.listdir(checkpoints) if n.isdigit())
    assert killed_at < STEPS
    result = run_cli(args)  # the same command again
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from step {killed_at}" in result.stdout
    assert _losses(tmp_path) == _losses(reference)
    assert _evals(tmp_path) == _evals(reference)


@pytest.mark.slow
def test_resume_against_another_dataset_is_refused(dataset_copy, tmp_path, capsys):
    run = [*RUN, "stop_at=4"]  # RUN's schedule: its compiled steps are in the session's cache
    train.train_and_evaluate(make_config(dataset_copy, *run, "stop_at=2"), str(tmp_path))
    manifest_path = dataset_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["fingerprint"] = "f" * 64  # another dataset: its (only) version has another fingerprint
    for version in manifest.get("versions", []):
        version["fingerprint"] = "f" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(resume.ResumeError, match="fingerprint"):
        train.train_and_evaluate(make_config(dataset_copy, *run), str(tmp_path))
    # The CLI says so in one line and exits 2: the config or dataset must change, not the run.
    capsys.readouterr()
    assert train.run(["tiny", *overrides(dataset_copy, *run, f"workdir={tmp_path}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "fingerprint" in err and len(err.splitlines()) == 1
    summary = train.train_and_evaluate(make_config(dataset_copy, *run, "allow_fingerprint_change=true"), str(tmp_path))
    assert summary["start_step"] == 2 and summary["step"] == 4


@pytest.mark.slow
def test_resume_with_another_model_is_refused(sample_dataset, tmp_path):
    run = [*RUN, "stop_at=2"]  # RUN's schedule: its compiled steps are in the session's cache
    train.train_and_evaluate(make_config(sample_dataset, *run, "stop_at=1"), str(tmp_path))
    with pytest.raises(resume.ResumeError, match="model"):
        train.train_and_evaluate(make_config(sample_dataset, *run, "model.width=64"), str(tmp_path))
    with pytest.raises(resume.ResumeError, match="model"):
        train.train_and_evaluate(make_config(sample_dataset, *run, "model.field_embedding=false"), str(tmp_path))
    # The attention kernel says how the same model is computed: resuming with another one is fine.
    summary = train.train_and_evaluate(make_config(sample_dataset, *run, "model.attention=xla"), str(tmp_path))
    assert summary["start_step"] == 1 and summary["step"] == 2


def _checkpoint_meta_file(workdir, step: int):
    return workdir / "checkpoints" / str(step) / "meta" / "metadata"  # Orbax's JsonSave file


@pytest.mark.slow
def test_resume_from_an_old_augmentation_scheme_is_refused(sample_dataset, tmp_path, capsys):
    run = [*RUN, "stop_at=3"]  # RUN's schedule: its compiled steps are in the session's cache
    train.train_and_evaluate(make_config(sample_dataset, *run, "stop_at=1"), str(tmp_path))
    meta_file = _checkpoint_meta_file(tmp_path, 1)
    meta = json.loads(meta_file.read_text())
    assert meta["augment_scheme"] == "hash-v1"
    del meta["augment_scheme"]  # what checkpoints written before the counter-based scheme hold
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(resume.ResumeError, match="augmentation scheme .*silently change the data order"):
        train.train_and_evaluate(make_config(sample_dataset, *run), str(tmp_path))
    capsys.readouterr()
    assert train.run(["tiny", *overrides(sample_dataset, *run, f"workdir={tmp_path}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "augmentation scheme" in err and len(err.splitlines()) == 1
    with pytest.raises(resume.ResumeError, match="augmentation scheme"):  # the shuffle changed too
        train.train_and_evaluate(make_config(sample_dataset, *run, "augment=false"), str(tmp_path))


@pytest.mark.slow
def test_a_damaged_data_file_ends_the_run_with_exit_1_and_keeps_the_checkpoint(dataset_copy, tmp_path, capsys):
    # num_workers=0: a worker process's read error reaches the trainer as the same error
    # (test_record_reader.py); this is about what the CLI makes of it.
    run = [*MINI, "train_split=val", "steps=12", "batch_size=64", "eval_every=0", "eval_batches=1",
           "checkpoint_every=1", "log_every=1", "verify_checksums=false", "num_workers=0", f"workdir={tmp_path}"]
    assert train.run(["tiny", *overrides(dataset_copy, *run, "stop_at=1")]) == 0  # a checkpoint to resume from
    val = dataset_copy / "val" / "val-00000-of-00001.array_record"
    bad = damage_one_record(val)
    result = run_cli(["tiny", *overrides(dataset_copy, *run)])  # 12 batches of 64 read all 591 records
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    last = errors[0]
    assert last.startswith(f"error: {val}: record {bad} cannot be read"), result.stderr[-2000:]
    assert "beam_pipelines.stats --dataset" in last and "verify_checksums=true" in last
    assert "Traceback" not in result.stderr
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] >= 1  # the last checkpoint stays, complete
    logged = [r["step"] for r in metrics_log.read_metrics(str(tmp_path))]
    assert logged and logged[-1] >= steps[-1]
    # By default the start-up check (sha256 of a file written since the last check) refuses the file.
    capsys.readouterr()
    assert train.run(["tiny", *overrides(dataset_copy, *[a for a in run if a != "verify_checksums=false"])]) == 2
    assert "sha256 differs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["tiny", "stepz=3"], "unknown config key(s) stepz"),
        (["tiny", "steps=three"], "steps: expected"),
        (["no_such_preset"], "no preset of that name"),
        (["tiny", "data_dir={tmp}", "workdir={tmp}/w", "progress=false"], "no manifest.json"),
        (["tiny", "data_dir={tmp}/nowhere", "workdir={tmp}/w", "progress=false"], "no manifest.json"),
    ],
)
def test_cli_refuses_bad_config_and_missing_data_with_exit_2(args, message, tmp_path, capsys):
    assert train.run([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_trainer_clis_exit_2_on_bad_input(tmp_path):
    """The three ``python -m`` entry points: bad input is exit 2 and one ``error:`` line, as in every job."""
    runs = {
        "trainer.train": (["tiny", "stepz=3"], "unknown config key"),
        "trainer.evaluate": (["--workdir", str(tmp_path), "--data_dir", str(tmp_path), "--output", str(tmp_path / "r")],
                             "no checkpoints/ directory"),
        "trainer.predict": (["--workdir", str(tmp_path), "--src", "10.0.0.1"], "no checkpoints/ directory"),
    }
    for module, (args, message) in runs.items():
        result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=subprocess_env(),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, (module, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr, module


@pytest.mark.slow
def test_four_devices_match_one_device(sample_dataset, reference, tmp_path):
    args = ["tiny", *overrides(sample_dataset, *RUN, "stop_at=8"), f"workdir={tmp_path}"]
    result = run_cli(args, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 device(s)" in result.stdout
    got = metrics_log.read_metrics(str(tmp_path))
    want = metrics_log.read_metrics(str(reference))[:8]
    assert [r["step"] for r in got] == list(range(1, 9))
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5, abs=1e-5)
    assert got[-1]["eval_loss"] == pytest.approx(want[-1]["eval_loss"], rel=1e-5)


@pytest.mark.slow
def test_has_a_pulse(sample_dataset, tmp_path):
    """Pretokenize the sample (the session fixture runs the real job), train tiny, the loss goes down.

    16 steps: the loss is already about 1.8 nats below ln(vocab) there (measured 3.80 over the last five
    steps, 3.68 on validation), so the bounds below hold with a wide margin."""
    steps = 16
    run = [f"steps={steps}", "batch_size=2", "warmup_steps=5", "eval_every=0", "eval_batches=4", "checkpoint_every=100"]
    rc = train.run(["tiny", *overrides(sample_dataset, *run, f"workdir={tmp_path}")])
    assert rc == 0
    records = metrics_log.read_metrics(str(tmp_path))
    losses = [r["loss"] for r in records]
    assert len(losses) == steps
    assert abs(losses[0] - math.log(267)) < 0.05
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses
    assert records[-1]["eval_loss"] < math.log(267) - 1.0
    assert (tmp_path / "checkpoints" / str(steps)).is_dir()


@pytest.mark.slow
def test_sigterm_checkpoints_and_stops_then_resumes_bit_identical(sample_dataset, reference, tmp_path):
    """A scheduler's preemption: scripts/train.sh gets SIGTERM, checkpoints after the current step, exits 0."""
    args = ["tiny", *overrides(sample_dataset, *RUN, WORKERS, "checkpoint_every=100"), f"workdir={tmp_path}"]
    env = subprocess_env(PYTHON=sys.executable)
    proc = subprocess.Popen(
        ["scripts/train.sh", *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    stopped_at = int(max(os.listdir(tmp_path / "checkpoints"), key=int))
    assert 3 <= stopped_at < STEPS
    assert _losses(tmp_path)[-1][0] == stopped_at
    result = subprocess.run(
        ["scripts/train.sh", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from step {stopped_at}" in result.stdout
    assert _losses(tmp_path) == _losses(reference)


def test_launch_scripts_need_a_config():
    for script in ("scripts/train.sh", "scripts/slurm_train.sh"):
        result = subprocess.run(["bash", script], cwd=REPO_ROOT, capture_output=True, text=True)
        assert result.returncode == 2 and "usage" in result.stderr


_FAKE_SRUN = """#!/usr/bin/env bash
# Stand-in for srun: start SLURM_NTASKS copies of the command on this machine, SLURM_PROCID set; when one
# fails, end the others, as the script's --kill-on-bad-exit=1 asks (they would wait for it until a timeout).
while [[ $# -gt 0 && "$1" == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" & pids+=($!); done
rc=0
for ((i = 0; i < SLURM_NTASKS; i++)); do
  wait -n && continue
  status=$?
  if ((rc == 0)); then rc=$status; kill "${pids[@]}" 2>/dev/null; fi  # the first failure's status
done
exit $rc
"""


@pytest.mark.slow
def test_slurm_script_runs_two_processes_and_resumes(sample_dataset, tmp_path):
    """scripts/slurm_train.sh with stand-ins for srun/scontrol: two CPU processes on one machine play two
    hosts (jax.distributed over Gloo), each reading its own half of the data; stop, then resume."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(_FAKE_SRUN)
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho localhost\n")
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    env = subprocess_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHON=sys.executable, SLURM_JOB_NODELIST="localhost",
        SLURM_NTASKS="2", JAX_COORDINATOR_PORT=str(free_port()),
    )
    workdir = tmp_path / "run"
    args = ["tiny", *overrides(sample_dataset, *MINI, "steps=4", "batch_size=4", "checkpoint_every=2", "eval_every=2",
                               "eval_batches=1", "log_every=1", WORKERS), f"workdir={workdir}"]

    def launch(*extra):
        result = subprocess.run(["bash", "scripts/slurm_train.sh", *args, *extra], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    first = launch("stop_at=2")
    assert "2 device(s) x 2 process(es)" in first.stdout
    saved = set(os.listdir(workdir / "checkpoints" / "2" / "data_iter"))
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= saved  # one iterator state per host
    second = launch()
    assert "resuming from step 2" in second.stdout
    records = metrics_log.read_metrics(str(workdir))
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # the primary host alone writes metrics
    assert all(math.isfinite(r["loss"]) for r in records) and "eval_loss" in records[-1]
