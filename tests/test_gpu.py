"""GPU paths that exist today; skipped with the reason where no CUDA device is present (run when one is lent)."""

from __future__ import annotations

import numpy as np
import pytest

from difftrt.models.specs import component_specs, dims

from .conftest import TINY, infer

pytestmark = pytest.mark.gpu


def test_torch_cuda_engine_matches_cpu(ckpt_dir):
    from difftrt.backends.torch_ref import TorchEngine
    from difftrt.models import checkpoint

    spec = component_specs(TINY)["unet"]
    feeds = spec.sample_inputs(dims(TINY, 2), seed=5)
    module = checkpoint.load(ckpt_dir).unet
    on_cpu = infer(TorchEngine(module, spec, "cpu"), feeds)["out_sample"]
    on_gpu = infer(TorchEngine(module, spec, "cuda"), feeds)["out_sample"]
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)  # TF32 convolutions may differ slightly


def test_onnxruntime_cuda_matches_cpu(export_dir):
    from difftrt.artifact import open_artifact
    from difftrt.backends.ort import OrtEngine, import_onnxruntime

    if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (install difftrt[cuda] instead of difftrt[cpu])")
    artifact = open_artifact(export_dir)
    spec = artifact.specs["unet"]
    feeds = spec.sample_inputs(dims(TINY, 2), seed=5)
    cpu = infer(OrtEngine(artifact.path("unet"), spec, "cpu"), feeds)["out_sample"]
    gpu = infer(OrtEngine(artifact.path("unet"), spec, "cuda"), feeds)["out_sample"]
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)
