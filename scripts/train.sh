#!/usr/bin/env bash
# Train on one host with all its devices (data parallel over them).
#
#   scripts/train.sh CONFIG|PRESET [key=value ...]
#   scripts/train.sh tiny data_dir=out workdir=runs/tiny steps=500
#
# Re-running the same command resumes from the latest checkpoint in workdir. SIGTERM (Ctrl-\ aside,
# `kill PID`, a scheduler's preemption) makes the trainer checkpoint after the current step and exit.
# PYTHON picks the interpreter (default: python); extra XLA_FLAGS pass through.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 CONFIG|PRESET [key=value ...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m trainer.train "$@"
