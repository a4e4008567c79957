"""Open an export (ONNX Runtime) or an engine folder (TensorRT) as a ready pipeline; torch-free."""

from __future__ import annotations

from pathlib import Path

from difftrt.artifact import Artifact, Verify, open_artifact
from difftrt.backends.registry import backend_for, open_engines, require
from difftrt.pipeline import Text2ImagePipeline

SAMPLING_COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def load_pipeline(engine: Path, device: str = "cpu", threads: int = 0, img2img: bool = False,
                  backend: str | None = None, verify: Verify = Verify.QUICK,
                  cuda_graph: bool = False) -> tuple[Text2ImagePipeline, Artifact]:
    """``engine`` is an export folder or its unet subfolder or file (ONNX Runtime, on ``device``), or an engine
    folder or one of its plans (TensorRT, on the local GPU; ``cuda_graph`` for static plans); the files are
    verified (see ``difftrt.artifact``) before anything runs. ``img2img`` also loads the VAE encoder."""
    chosen = backend_for(Path(engine), backend)
    checked = require(chosen, Path(engine), verify)
    components = SAMPLING_COMPONENTS + (("vae_encoder",) if img2img else ())
    if chosen == "tensorrt":
        from difftrt.trt.engine_folder import open_engine_folder
        from difftrt.trt.gpu import local_arch

        artifact: Artifact = open_engine_folder(Path(engine), local_arch() or "", verify, needs=components,
                                                checked=checked)
    else:
        artifact = open_artifact(Path(engine), "unet", verify, needs=components)
    engines = open_engines(artifact, components, chosen, device=device, threads=threads, cuda_graph=cuda_graph)
    return Text2ImagePipeline(engines, artifact.tokenizer(), artifact.config), artifact
