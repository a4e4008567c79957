"""Open an exported artifact as a ready pipeline (torch-free for the ONNX Runtime backend)."""

from __future__ import annotations

from pathlib import Path

from difftrt.artifact import Artifact, open_artifact
from difftrt.backends.base import Engine, check_engine_matches
from difftrt.backends.ort import OrtEngine
from difftrt.pipeline import Text2ImagePipeline

SAMPLING_COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def ort_engines(artifact: Artifact, components: tuple[str, ...] = SAMPLING_COMPONENTS,
                device: str = "cpu", threads: int = 0) -> dict[str, Engine]:
    """One verified ONNX Runtime engine per component; a file that is not its component is refused."""
    engines: dict[str, Engine] = {}
    for name in components:
        path = artifact.path(name)
        engine = OrtEngine(path, name, device=device, threads=threads)
        check_engine_matches(engine, artifact.specs[name], str(path))
        engines[name] = engine
    return engines


def load_pipeline(engine: Path, device: str = "cpu", threads: int = 0,
                  img2img: bool = False) -> tuple[Text2ImagePipeline, Artifact]:
    """``engine`` is an artifact folder or its ``unet.onnx``; hashes are verified before anything runs.
    ``img2img`` also loads the VAE encoder."""
    artifact = open_artifact(Path(engine), "unet")
    components = SAMPLING_COMPONENTS + (("vae_encoder",) if img2img else ())
    engines = ort_engines(artifact, components, device=device, threads=threads)
    return Text2ImagePipeline(engines, artifact.tokenizer(), artifact.config), artifact
