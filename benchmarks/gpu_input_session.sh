#!/usr/bin/env bash
# The input-pipeline figures on a GPU host, in one run: the `100m` trainer's tokens/s and MFU (train_bench), the
# input pipeline alone with 1, 2, 4, 8 and 16 worker processes against the naive read loop of the same run
# (train_bench --input_only), and data_wait_fraction of short `100m` and `20m` training runs.
#
#   bash benchmarks/gpu_input_session.sh DATA_DIR OUT_DIR
#
# DATA_DIR is a pretokenized dataset (`python -m beam_pipelines.pretokenize --output DATA_DIR`). Each step
# writes its log under OUT_DIR (at most 8 files) and the script goes on if one fails or runs out of time, so
# one short lease yields everything it can. Needs the `gpu` extra (a CUDA build of JAX) at the locked versions:
# `pip install -c constraints.txt -e '.[gpu]'` (docs/development.md: carrying wheels to a machine without an index).
set -u
data=${1:?usage: gpu_input_session.sh DATA_DIR OUT_DIR}
out=${2:?usage: gpu_input_session.sh DATA_DIR OUT_DIR}
mkdir -p "$out"
. "$(dirname "$0")/gpu_check.sh"  # $py, and exit 2 without a GPU backend

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; echo "cores: $(nproc)"; } > "$out/bench_100m.log" 2>&1
timeout 170 $py benchmarks/train_bench.py 100m "data_dir=$data" --steps 15 --input_batches 50 \
    --json "$out/bench_100m.json" >> "$out/bench_100m.log" 2>&1
echo "exit $?" >> "$out/bench_100m.log"
timeout 170 $py benchmarks/train_bench.py tiny "data_dir=$data" batch_size=64 --input_only --input_batches 300 \
    --workers 1 2 4 8 16 --json "$out/input_only.json" > "$out/input_only.log" 2>&1
echo "exit $?" >> "$out/input_only.log"
for cfg in 100m 20m; do
    rm -rf "/tmp/run_$cfg"
    timeout 130 $py -m trainer.train "$cfg" "data_dir=$data" "workdir=/tmp/run_$cfg" steps=60 log_every=10 \
        warmup_steps=10 eval_every=0 eval_batches=2 checkpoint_every=1000 progress=false > "$out/train_$cfg.log" 2>&1
    echo "exit $?" >> "$out/train_$cfg.log"
    cp "/tmp/run_$cfg/metrics.jsonl" "$out/metrics_$cfg.jsonl" 2>/dev/null
done
