#!/usr/bin/env bash
# Refresh constraints.txt, the lock of every tested version (docs/development.md, "Locked installs").
#
#   bash scripts/refresh_lock.sh            # resolve, install, pip check, the whole test suite, then replace
#   bash scripts/refresh_lock.sh --quick    # the same with the quick set (pytest -m "not slow") only
#
# It resolves (with uv) the newest releases that pyproject.toml admits for the package and every extra together
# (test, aws, gcp, dask, report, gpu), so one consistent set pins them all; installs the test set from that
# new lock in a fresh virtualenv exactly as the README and .ci/run do; and only when `pip check` and the
# tests pass does it write constraints.txt. A release that breaks us therefore never reaches the lock:
# exclude it in pyproject.toml (with the reason beside it) and run this again.
#
# The lock is resolved for the interpreter and platform it runs on (CPython 3.11, Linux x86_64, like CI);
# nvidia-* lines come from the gpu extra and are only installed with it.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(pytest)
[[ "${1:-}" == "--quick" ]] && tests=(pytest -m "not slow")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
python -m pip install -q --upgrade pip

echo "refresh_lock: resolving the newest admitted releases of every dependency and extra" >&2
# uv's resolver, because pip's backtracks for a quarter of an hour over boto3 releases that s3fs's aiobotocore
# rules out (its botocore pin) before it settles; pip still installs and tests the result below.
python -m pip install -q uv
uv pip compile pyproject.toml --extra test --extra aws --extra gcp --extra dask --extra report --extra gpu \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --no-annotate -q -o "$work/pins.txt"
python - "$work/pins.txt" "$(python -m pip --version | cut -d' ' -f2)" "$(uv --version)" > "$work/constraints.txt" <<'PY'
import datetime
import sys

pins = {"pip": sys.argv[2]}
for line in open(sys.argv[1]):
    name, sep, version = line.strip().partition("==")
    if sep:
        pins[name] = version
print("# The tested versions of every dependency and extra: install with pip's -c (README, .ci/run).")
print("# Written by scripts/refresh_lock.sh; do not edit by hand.")
print(f"# Resolved {datetime.date.today()} by {sys.argv[3]} for CPython 3.11 on Linux x86_64.")
for name in sorted(pins, key=str.lower):
    print(f"{name}=={pins[name]}")
PY

echo "refresh_lock: installing the test set from the new lock in a fresh virtualenv" >&2
python -m pip install -q -c "$work/constraints.txt" pip
pip install -q -c "$work/constraints.txt" -e '.[test]'
pip check
# The tests read constraints.txt too (tests/test_lock.py): the new lock stands in place while they run, and the
# old one comes back unless they pass.
cp constraints.txt "$work/constraints.old"
cp "$work/constraints.txt" constraints.txt
if ! "${tests[@]}"; then
  cp "$work/constraints.old" constraints.txt
  echo "refresh_lock: the tests failed with the new lock; constraints.txt left as it was" >&2
  exit 1
fi
echo "refresh_lock: constraints.txt updated ($(grep -c '==' constraints.txt) pins); review and commit it" >&2
