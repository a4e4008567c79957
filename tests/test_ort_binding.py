"""ONNX Runtime with IO binding: the engine's own buffers bound once per shape set give plain ``run``'s
outputs (the oracle), on CPU here; on CUDA the same code binds CuPy buffers (test_gpu.py)."""

from __future__ import annotations

import numpy as np
import pytest

from difftrt.artifact import open_artifact
from difftrt.backends.ort import OrtEngine
from difftrt.errors import DependencyError, UsageError
from tests.conftest import infer


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_bound_buffers_give_run_outputs(export_dir, component):
    artifact = open_artifact(export_dir, component)
    spec = artifact.specs[component]
    plain = OrtEngine(artifact.path(component), spec)
    bound = OrtEngine(artifact.path(component), spec, io_binding=True)
    for which, seed in (("opt", 0), ("opt", 1), ("max", 2), ("min", 3)):  # a new shape set rebinds
        feeds = spec.sample_inputs(spec.profile(which), seed)
        want = infer(plain, feeds)
        got = infer(bound, feeds)
        for name in spec.output_names:
            np.testing.assert_array_equal(got[name], want[name])
            assert got[name] is not bound._buffers[name]  # a copy: the next call overwrites the buffer


def test_outputs_survive_the_next_call(export_dir):
    artifact = open_artifact(export_dir, "unet")
    spec = artifact.specs["unet"]
    engine = OrtEngine(artifact.path("unet"), spec, io_binding=True)
    first = infer(engine, spec.sample_inputs(spec.profile("opt"), 0))["out_sample"]
    kept = first.copy()
    infer(engine, spec.sample_inputs(spec.profile("opt"), 1))
    np.testing.assert_array_equal(first, kept)


def test_cuda_options_are_refused_clearly(export_dir):
    artifact = open_artifact(export_dir, "unet")
    with pytest.raises(UsageError, match="CUDA graphs need --device cuda with IO binding"):
        OrtEngine(artifact.path("unet"), artifact.specs["unet"], cuda_graph=True)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        engine = OrtEngine(artifact.path("unet"), artifact.specs["unet"], device="cuda")
        with pytest.raises(DependencyError, match="CUDAExecutionProvider is not available"):
            engine.load()
