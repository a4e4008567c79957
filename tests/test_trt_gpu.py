"""TensorRT plans run through ``TrtEngine`` on a CUDA GPU (with TensorRT and CuPy), against ONNX Runtime on CPU;
skipped with the reason elsewhere (conftest skips every ``gpu`` test where no CUDA device is present)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.backends.base import Stage
from difftrt.cli import main
from difftrt.errors import ShapeError
from difftrt.trt.binding import manifest_profiles
from difftrt.trt.engine_folder import open_engine_folder

from .conftest import TINY, build_engines, ort_engine, psnr

pytestmark = pytest.mark.gpu


def build(export, out, *options):
    """``difftrt build`` quietly (this GPU's TensorRT, or TensorRT-RTX for the ``--arch`` given)."""
    return build_engines(export, out, "-q", *options)


@pytest.fixture(scope="module")
def gpu_engines(request, tmp_path_factory):
    """fp16 plans of the tiny export for this GPU: dynamic (--max-batch 2) and static (1 image at 16 px)."""
    pytest.importorskip("cupy", reason="needs CuPy: pip install cupy-cuda12x (or cupy-cuda13x)")
    from difftrt.errors import DependencyError
    from difftrt.trt.gpu import local_arch
    from difftrt.trt.shim import import_tensorrt

    try:  # before the fp16 export is made: without TensorRT there is nothing to build it for
        built_with, arch = import_tensorrt(), local_arch()
    except DependencyError as exc:
        pytest.skip(str(exc))
    if built_with.builds_for_any_arch and arch not in built_with.arch_choices():
        pytest.skip(f"{built_with.flavour} {built_with.version} cannot target this GPU ({arch}); install full TensorRT")
    export_fp16_dir = request.getfixturevalue("export_fp16_dir")
    root = tmp_path_factory.mktemp("gpu-engines")
    return (build(export_fp16_dir, root / "dynamic", "--max-batch", "2"),
            build(export_fp16_dir, root / "static", "--static", "--max-batch", "1", "--sizes", "16"))


def trt_engine(folder, component, cuda_graph=False):
    from difftrt.backends.tensorrt import TrtEngine
    from difftrt.trt.gpu import local_arch

    artifact = open_engine_folder(folder, local_arch())
    spec = artifact.specs[component]
    engine = TrtEngine(artifact.path(component), spec, manifest_profiles(artifact.plan(component), spec),
                       artifact.flavour, cuda_graph=cuda_graph, rebuild=artifact.rebuild())
    engine.load()
    engine.activate()
    return engine


def run_once(engine, feeds):
    """One call; the outputs on the host (a TrtEngine returns CuPy arrays, ONNX Runtime NumPy ones)."""
    engine.ready({name: tuple(a.shape) for name, a in feeds.items()})
    return {name: a if isinstance(a, np.ndarray) else a.get() for name, a in engine.infer(feeds).items()}


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder"])
def test_trt_components_match_onnxruntime_cpu(gpu_engines, export_fp16_dir, component):
    from difftrt.models.specs import dims

    engine, reference = trt_engine(gpu_engines[0], component), ort_engine(export_fp16_dir, component)
    tol = 3e-2 if engine.spec.precision.value == "fp16" else 1e-2  # fp16 graphs; the fp32 VAE may run in TF32
    for batch, side in ((1, 8), (2, 16), (1, 4)):  # re-allocates per shape set
        feeds = engine.spec.sample_inputs(dims(TINY, batch * (2 if component == "unet" else 1), side, side), seed=side)
        want = run_once(reference, feeds)
        got_host = run_once(engine, feeds)  # NumPy feeds: copied to the device
        got_device = run_once(engine, {n: engine.xp.asarray(a) for n, a in feeds.items()})
        for name, expected in want.items():
            for got in (got_host, got_device):
                np.testing.assert_allclose(got[name].astype(np.float32), expected.astype(np.float32), rtol=tol, atol=tol)
    engine.close()
    assert engine.stage is Stage.NEW and engine.engine is None and not engine.buffers


def test_sampling_through_tensorrt_matches_onnxruntime_cpu(gpu_engines, export_fp16_dir, tmp_path):
    from PIL import Image

    args = ["--steps", "4", "--seed", "3", "--height", "16", "--width", "16", "-q", "--json"]
    trt_run = CliRunner().invoke(main, ["sample", "--engine", str(gpu_engines[0]), "--out", str(tmp_path / "t.png"), *args])
    assert trt_run.exit_code == 0, trt_run.output
    assert json.loads(trt_run.stdout)["backend"] == "tensorrt"
    ort_run = CliRunner().invoke(main, ["sample", "--engine", str(export_fp16_dir), "--out", str(tmp_path / "o.png"), *args])
    assert ort_run.exit_code == 0, ort_run.output
    a, b = (np.asarray(Image.open(tmp_path / f).convert("RGB")) for f in ("t.png", "o.png"))
    assert psnr(a, b) > 30, psnr(a, b)


def test_a_cuda_graph_replays_the_static_plan_with_each_calls_inputs(gpu_engines):
    from difftrt.models.specs import dims

    graphed, plain = trt_engine(gpu_engines[1], "unet", cuda_graph=True), trt_engine(gpu_engines[1], "unet")
    for seed in range(3):  # the first call is the warm-up run before the capture, the next ones replay the graph
        feeds = graphed.spec.sample_inputs(dims(TINY, 2, 8, 8), seed=seed)
        got, want = run_once(graphed, feeds), run_once(plain, feeds)
        np.testing.assert_allclose(got["out_sample"].astype(np.float32), want["out_sample"].astype(np.float32),
                                   rtol=1e-3, atol=1e-3)
    assert graphed.graph is not None or graphed._native_graph  # captured here, or by TensorRT-RTX itself
    with pytest.raises(ShapeError, match="outside what"):
        graphed.ready({"sample": (4, 4, 8, 8), "timestep": (4,), "encoder_hidden_states": (4, 12, 32)})
