#!/usr/bin/env bash
# The GPU check in one call, run from anywhere in the working tree (docs/device-check.md):
#   benchmarks/device_check.sh --fashion-mnist .fashion-mnist --out report.json [device_check.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"
exec "${PYTHON:-python3}" benchmarks/device_check.py "$@"
