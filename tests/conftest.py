"""Shared fixtures: one tiny checkpoint and its export per test session. Offline variables are set before
anything can import onnxruntime (this file is imported before the test modules)."""

from __future__ import annotations

import os

for _key, _value in {"ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                     "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ[_key] = _value

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from difftrt.config import ModelConfig, TextEncoderConfig, UNetConfig, VAEConfig  # noqa: E402

TINY = ModelConfig(
    unet=UNetConfig(block_channels=(16, 32), attention_levels=(1,), num_heads=2, cross_attention_dim=32,
                    norm_groups=8, sample_size=8),
    vae=VAEConfig(block_channels=(16, 32), norm_groups=8, sample_size=16),
    text_encoder=TextEncoderConfig(vocab_size=96, max_length=12, hidden_size=32, num_layers=1, num_heads=2),
)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from difftrt.models import checkpoint

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    checkpoint.save(checkpoint.create(TINY, seed=0), out)
    return out


def ort_engine(export_dir: Path, component: str):
    """A ready-to-allocate ONNX Runtime engine for one component of an export, with the manifest's spec."""
    from difftrt.artifact import open_artifact
    from difftrt.backends.ort import OrtEngine

    artifact = open_artifact(export_dir, component)
    engine = OrtEngine(artifact.path(component), artifact.specs[component])
    engine.load()
    engine.activate()
    return engine


def infer(engine, feeds):
    """Allocate ``engine`` for ``feeds``' shapes and run it once."""
    engine.ready({name: array.shape for name, array in feeds.items()})
    return engine.infer(feeds)


@pytest.fixture(scope="session")
def export_dir(ckpt_dir, tmp_path_factory) -> Path:
    from difftrt.exporter.onnx import export_checkpoint
    from difftrt.models import checkpoint

    out = tmp_path_factory.mktemp("export") / "tiny"
    export_checkpoint(checkpoint.load(ckpt_dir), out, source=str(ckpt_dir))
    return out


def _no_cuda_reason() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA device is present."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        return None if torch.cuda.is_available() else "no CUDA GPU on this machine (torch.cuda.is_available() is False)"
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
        return None
    return "no CUDA GPU on this machine (no working nvidia-smi)"


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and (reason := _no_cuda_reason()):
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def export_fp16_dir(ckpt_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint exported with the U-Net and text encoder in fp16 (VAE fp32, the default)."""
    from difftrt.exporter.onnx import export_checkpoint
    from difftrt.models import checkpoint
    from difftrt.models.specs import Precision

    out = tmp_path_factory.mktemp("export16") / "tiny-fp16"
    export_checkpoint(checkpoint.load(ckpt_dir), out, source=str(ckpt_dir),
                      precision={"unet": Precision.FP16, "text_encoder": Precision.FP16})
    return out


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when identical)."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


ENGINE_ARCHS = ("sm86", "sm89")  # TensorRT-RTX targets of the engines_dir fixture (built on CPU)


def build_engines(export: Path, out: Path, *options: str) -> Path:
    """``difftrt build --export EXPORT --out OUT OPTIONS`` through the CLI; asserts it succeeded, returns ``out``."""
    from click.testing import CliRunner

    from difftrt.cli import main

    result = CliRunner().invoke(main, ["build", "--export", str(export), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def engines_dir(export_dir, tmp_path_factory) -> Path:
    """Real TensorRT-RTX plans of the tiny export for two targets, built on CPU: ``--max-batch 2``."""
    pytest.importorskip("tensorrt_rtx", reason="needs tensorrt-rtx: pip install 'difftrt[tensorrt-rtx]'")
    return build_engines(export_dir, tmp_path_factory.mktemp("engines") / "tiny", "--arch", ENGINE_ARCHS[0],
                         "--arch", ENGINE_ARCHS[1], "--max-batch", "2")


@pytest.fixture
def no_gpu(monkeypatch):
    """The GPU probe's answer on a machine without one (CI's), so these tests read the same on a GPU machine."""
    import difftrt.trt.build
    import difftrt.trt.gpu

    monkeypatch.setattr(difftrt.trt.gpu, "local_arch", lambda: None)
    monkeypatch.setattr(difftrt.trt.build, "local_arch", lambda: None)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """A CLIP-format tokenizer folder with merges trained here (tests/sd_folders.py)."""
    pytest.importorskip("tokenizers")
    from .sd_folders import train_clip_tokenizer

    return train_clip_tokenizer(tmp_path_factory.mktemp("clip") / "tokenizer", tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="session")
def sd_tiny_dir(clip_dir, tmp_path_factory) -> Path:
    """A tiny random-weight StableDiffusionPipeline saved by diffusers (two-level VAE: factor 2, not 8)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    from difftrt.bench.sd15 import TINY as SD_TINY, save_random_pipeline

    return save_random_pipeline(SD_TINY, tmp_path_factory.mktemp("sd") / "sd-tiny", tokenizer_dir=clip_dir)


@pytest.fixture(scope="session")
def sd_tiny_export(sd_tiny_dir, tmp_path_factory) -> Path:
    """``difftrt export`` of the tiny diffusers folder, through the CLI."""
    from click.testing import CliRunner

    from difftrt.cli import main

    out = tmp_path_factory.mktemp("sd-export") / "sd-tiny"
    result = CliRunner().invoke(main, ["export", "--ckpt", str(sd_tiny_dir), "--out", str(out), "--max-batch", "2",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    return out
