#!/usr/bin/env bash
# Download, on a machine with the package registry, the wheels the GPU machine lacks (its image has torch,
# transformers, cupy, onnx and onnxruntime but not these) into .gpu-wheels/ (git-ignored), to carry with
#   run(command="COMMIT=... bash benchmarks/gpu_run.sh", carry=[".gpu-wheels"])
# All are pure-Python wheels (py3-none-any), so the GPU machine's Python 3.12 takes them.
set -eu
rm -rf .gpu-wheels && mkdir -p .gpu-wheels
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu-wheels \
    "diffusers==0.42.1" "array-api-compat>=1.9" "array-api-strict>=2.0"
ls -l .gpu-wheels
