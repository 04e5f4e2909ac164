#!/usr/bin/env bash
# The GPU figures of the README in one run: the `100m` trainer benchmark (tokens/s, MFU against the
# datasheet peak and against a measured bf16 matmul; XLA attention as the same-run baseline of cuDNN's),
# then a short `20m` training run on the bundled sample and its evaluation against the baselines.
#
#   bash benchmarks/gpu_session.sh DATA_DIR OUT_DIR [STEPS_20M]
#
# DATA_DIR is a pretokenized sample (`python -m beam_pipelines.pretokenize --output DATA_DIR`). Every step
# writes its log and JSON under OUT_DIR and the script goes on if one fails, so one short lease on a GPU
# machine yields everything it can. Needs the `gpu` extra (a CUDA build of JAX) at the locked versions:
# `pip install -c constraints.txt -e '.[gpu]'`.
set -u
data=${1:?usage: gpu_session.sh DATA_DIR OUT_DIR [STEPS_20M]}
out=${2:?usage: gpu_session.sh DATA_DIR OUT_DIR [STEPS_20M]}
steps=${3:-400}
mkdir -p "$out"
. "$(dirname "$0")/gpu_check.sh"  # $py, and exit 2 without a GPU backend
log="$out/bench_100m.log"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$log"
PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}" $py - <<'PY' 2>&1 | tee -a "$log"
import jax, jax.numpy as jnp, numpy as np, flax, optax
from train_bench import measured_matmul_peak
print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__)
print("devices", jax.devices())
# A measured ceiling next to the datasheet's: the best of 20 8192^3 bf16 matmuls on random operands.
print(f"measured bf16 matmul peak: {measured_matmul_peak('bfloat16', n=8192) / 1e12:.1f} TFLOP/s")
rng = np.random.default_rng(0)
# cuDNN flash attention (model.attention=auto on a GPU) against XLA's, both against a float32 reference.
q, k, v = (jnp.asarray(rng.standard_normal((8, 1024, 12, 64)), jnp.bfloat16) for _ in range(3))
ref = jax.nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)), is_causal=True)
for impl in ("xla", "cudnn"):
    y = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl).astype(jnp.float32)
    print(f"attention {impl}: |y - ref| / |ref| = {float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref)):.2e}")
PY

# The same benchmark with XLA's attention (what runs on a CPU) is the baseline for the cuDNN kernel.
timeout 130 $py benchmarks/train_bench.py 100m "data_dir=$data" model.attention=xla --steps 15 --input_batches 50 \
    2>&1 | tee -a "$log"
timeout 130 $py benchmarks/train_bench.py 100m "data_dir=$data" --steps 15 --json "$out/bench_100m.json" \
    2>&1 | tee -a "$log"

rm -rf /tmp/gpu_20m
timeout 160 $py -m trainer.train 20m "data_dir=$data" workdir=/tmp/gpu_20m "steps=$steps" batch_size=16 \
    warmup_steps=40 eval_every=100 eval_batches=8 checkpoint_every=100 progress=false 2>&1 | tail -5 \
    | tee "$out/run_20m.log"
cp /tmp/gpu_20m/metrics.jsonl "$out/metrics_20m.jsonl"
timeout 200 $py -m trainer.evaluate --workdir /tmp/gpu_20m --data_dir "$data" --split test --output "$out/eval_20m" \
    --no-progress 2>&1 | tail -20 | tee -a "$out/run_20m.log"
