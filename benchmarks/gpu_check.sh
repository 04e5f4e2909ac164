# Sourced by the GPU session scripts (gpu_session.sh, gpu_input_session.sh): unbuffered Python output, the
# interpreter in $py ($PYTHON, default python3), and a stop at once, exit 2, when JAX has no GPU backend:
# every figure would then be a CPU figure, so say how to get one instead.
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
if ! "$py" -c 'import sys, jax; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  echo "$(basename "$0"): jax has no GPU backend here; install the gpu extra: pip install -c constraints.txt -e '.[gpu]'" >&2
  exit 2
fi
