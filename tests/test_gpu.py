"""GPU paths (torch CUDA, the device-resident loop, CuPy, ONNX Runtime CUDA); skipped with the reason where no CUDA
device is present, run by benchmarks/gpu_run.sh when one is lent. TensorRT plans: test_trt_gpu.py."""

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


def test_resident_cuda_pipeline_matches_the_cpu_host_pipeline(ckpt_dir):
    """The whole loop on the GPU (torch tensors, schedulers in torch) against the CPU NumPy loop, same seed."""
    from difftrt.backends.torch_ref import torch_engines
    from difftrt.models import checkpoint
    from difftrt.pipeline import SampleRequest, Text2ImagePipeline
    from difftrt.schedulers import from_config

    from difftrt.bench.device import strict_fp32

    strict_fp32(True)  # TF32 convolutions would differ by more than fp32 rounding, amplified by guidance
    ckpt = checkpoint.load(ckpt_dir)
    cpu = Text2ImagePipeline(torch_engines(ckpt), ckpt.tokenizer, TINY)
    gpu = Text2ImagePipeline(torch_engines(checkpoint.load(ckpt_dir), "cuda", resident=True), ckpt.tokenizer, TINY)
    req = SampleRequest("a red circle on the left", steps=8, guidance=5.0, seed=2, num_images=2)
    seen = []
    for name in ("ddim", "euler-a", "dpm++2m"):
        a = cpu(req, from_config(ckpt.scheduler_config, name))
        b = gpu(req, from_config(ckpt.scheduler_config, name), callback=lambda i, t, x, x0: seen.append(x.device.type))
        np.testing.assert_allclose(b.latents, a.latents, rtol=1e-3, atol=1e-3)
        assert np.abs(a.images.astype(int) - b.images).max() <= 2
    strict_fp32(False)
    assert set(seen) == {"cuda"}  # every step's latents stayed on the device


def test_torch_cuda_graph_replays_new_inputs(ckpt_dir):
    from difftrt.backends.torch_ref import TorchEngine, TorchOptions
    from difftrt.models import checkpoint

    spec = component_specs(TINY)["unet"]
    module = checkpoint.load(ckpt_dir).unet
    eager = TorchEngine(module, spec, "cuda", TorchOptions(dtype="float16", fused_attention=True))
    graphed = TorchEngine(module, spec, "cuda", TorchOptions(dtype="float16", fused_attention=True, cuda_graph=True))
    outs = []
    for seed in (5, 6):  # the second call must see its own inputs, copied into the captured buffers
        feeds = spec.sample_inputs(dims(TINY, 2), seed=seed)
        want, got = infer(eager, feeds)["out_sample"], infer(graphed, feeds)["out_sample"]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
        outs.append(got)
    assert not np.allclose(outs[0], outs[1])


def test_cupy_scheduler_loop_matches_numpy():
    cupy = pytest.importorskip("cupy", reason="needs CuPy: pip install cupy-cuda12x or cupy-cuda13x")
    from difftrt.arrays import to_host
    from difftrt.sampling import denoise_loop
    from difftrt.schedulers import from_config

    x0 = np.random.default_rng(0).standard_normal((2, 4, 32, 32), dtype=np.float32)
    for name in ("ddim", "euler-a", "dpm++2m", "heun", "lms", "pndm"):
        results = []
        for to_lib in (np.asarray, cupy.asarray):
            sched = from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, name)
            sched.set_timesteps(10)
            x = to_lib(x0 * sched.init_noise_sigma)
            out = denoise_loop(sched, lambda x, t: x * 0.1 + 0.01, x, sched.timesteps, np.random.default_rng(1))
            results.append(to_host(out))
        assert isinstance(out, cupy.ndarray), name
        np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)


def test_onnxruntime_cuda_io_binding_matches_cpu(export_dir):
    from difftrt.artifact import open_artifact
    from difftrt.backends.ort import OrtEngine, import_onnxruntime

    if "CUDAExecutionProvider" not in import_onnxruntime().get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (install difftrt[cuda] instead of difftrt[cpu])")
    pytest.importorskip("cupy", reason="IO binding on CUDA needs CuPy: pip install cupy-cuda12x or cupy-cuda13x")
    from difftrt.arrays import to_host

    artifact = open_artifact(export_dir)
    spec = artifact.specs["unet"]
    cpu_engine = OrtEngine(artifact.path("unet"), spec, "cpu")
    engine = OrtEngine(artifact.path("unet"), spec, "cuda", io_binding=True, cuda_graph=True)
    for seed in (5, 6, 7):  # ORT runs once, captures on the next run, then replays: each must see its own inputs
        feeds = spec.sample_inputs(dims(TINY, 2), seed=seed)
        cpu = infer(cpu_engine, feeds)["out_sample"]
        device_feeds = {name: engine.asarray(a, a.dtype.name) for name, a in feeds.items()}
        gpu = to_host(infer(engine, device_feeds)["out_sample"])
        np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)
