#!/usr/bin/env bash
# Train on several hosts under SLURM: one process per host, each using all of its GPUs.
#
#   sbatch --nodes=4 scripts/slurm_train.sh CONFIG|PRESET [key=value ...]
#
# The coordinator is the job's first host; process count and ids come from SLURM (SLURM_NTASKS,
# SLURM_PROCID) and reach the trainer as JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID,
# which make it call jax.distributed.initialize(). workdir and data_dir must be on a shared filesystem.
# On preemption SLURM sends SIGTERM 120 s ahead (--signal); the hosts agree on a step, checkpoint and exit,
# and --requeue starts the same command again, which resumes from that checkpoint.
#SBATCH --job-name=ping-llm
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: sbatch $0 CONFIG|PRESET [key=value ...]" >&2
  exit 2
fi
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
: "${SLURM_JOB_NODELIST:?run this under SLURM (sbatch), or use scripts/train.sh on one host}"
coordinator=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export JAX_COORDINATOR_ADDRESS="${coordinator}:${JAX_COORDINATOR_PORT:-12357}"
export JAX_NUM_PROCESSES="${SLURM_NTASKS}"
echo "ping-llm: ${JAX_NUM_PROCESSES} processes, coordinator ${JAX_COORDINATOR_ADDRESS}" >&2
# Each task reads its own SLURM_PROCID, so the id must be taken inside the task.
srun --kill-on-bad-exit=1 bash -c 'JAX_PROCESS_ID="$SLURM_PROCID" exec "${PYTHON:-python}" -m trainer.train "$@"' bash "$@"
