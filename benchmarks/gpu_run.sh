#!/usr/bin/env bash
# The one device call for a session lent a GPU (benchmarks/README.md, "GPU check"). Run from the repository
# root on the GPU machine, with the wheels from benchmarks/carry_wheels.sh carried in .gpu-wheels/:
#   COMMIT=<sha> bash benchmarks/gpu_run.sh [gpu_check.py options]
# Installs the carried wheels (no index: nothing is fetched), runs the GPU check (its record is rewritten after
# every section, so a cut-short run keeps what it measured), then the GPU tests for at most 90 s; the records
# and the test log land in $OUT. Sized to end within 8 minutes.
set -u
OUT=${OUT:?set OUT to the folder whose files come back}
export ORT_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_OFFLINE=1 PYTHONPATH=$PWD
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --find-links .gpu-wheels diffusers array-api-compat array-api-strict \
    2>&1 | tail -3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout 400 python3 benchmarks/gpu_check.py --out "$OUT" --commit "${COMMIT:-unknown}" "$@"
timeout 90 python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tail -30 | tee "$OUT/gpu-tests.txt"
