"""Backend selection, in one place: the engine file's kind chooses the backend, ``--backend`` overrides.

    .onnx (or an export folder) -> onnxruntime      .plan (or an engine folder) -> tensorrt

The torch reference backend is not selected here: it runs a checkpoint, not an engine file, and
``difftrt bench`` / ``difftrt eval --torch`` build it from the checkpoint an export records.
"""

from __future__ import annotations

import logging
from pathlib import Path

from difftrt.artifact import Artifact, Verify
from difftrt.backends.base import Engine
from difftrt.errors import ArtifactError, UsageError

log = logging.getLogger(__name__)
BACKENDS = ("onnxruntime", "tensorrt")
SUFFIXES = {".onnx": "onnxruntime", ".plan": "tensorrt"}


def backend_for(engine: Path, override: str | None = None) -> str:
    """The backend that runs ``engine`` (a file or a folder); ``override`` is ``--backend``."""
    if override is not None:
        if override not in BACKENDS:
            raise UsageError(f"unknown backend {override!r}; choose one of {list(BACKENDS)}")
        return override
    engine = Path(engine)
    if not engine.exists():
        raise ArtifactError(f"engine path {engine} does not exist")
    if engine.is_dir():
        from difftrt.trt.engine_folder import is_engine_folder

        return "tensorrt" if is_engine_folder(engine) else "onnxruntime"
    if engine.suffix not in SUFFIXES:
        raise ArtifactError(f"{engine}: unknown engine file kind {engine.suffix!r}; expected one of {sorted(SUFFIXES)}")
    return SUFFIXES[engine.suffix]


def require(backend: str, engine: Path | None = None, verify: Verify = Verify.QUICK) -> Verify | None:
    """Fail early, in one line naming what is missing, when ``backend`` cannot run ``engine`` here; for TensorRT,
    the file check of the engine folder that decided (its files are verified here)."""
    if backend == "tensorrt":
        return _require_tensorrt(Path(engine) if engine is not None else Path("."), verify)
    if backend == "onnxruntime":
        from difftrt.backends.ort import import_onnxruntime

        if engine is not None and Path(engine).exists():
            _refuse_engine_folder(Path(engine))
        import_onnxruntime()
    return None


def _refuse_engine_folder(engine: Path) -> None:
    from difftrt.trt import engine_folder

    folder = engine if engine.is_dir() else engine.parent
    if engine_folder.is_engine_folder(folder):
        export = engine_folder.read_manifest(folder).get("export", {}).get("folder", "export/NAME")
        raise UsageError(f"--backend onnxruntime runs ONNX exports, and {folder} holds TensorRT plans; sample the "
                         f"export they were built from: difftrt sample --engine {export}")


def _require_tensorrt(engine: Path, verify: Verify) -> Verify:
    from difftrt.artifact import MANIFEST
    from difftrt.trt import engine_folder
    from difftrt.trt.gpu import local_arch

    folder = engine if engine.is_dir() else engine.parent
    if (folder / MANIFEST).is_file() and not engine_folder.is_engine_folder(folder):
        raise UsageError(f"--backend tensorrt runs plans, and {folder} is an ONNX export; build them first: "
                         f"difftrt build --export {folder} --out engines/{folder.resolve().name}")
    return engine_folder.check_runnable(engine, local_arch(), how=verify)


def open_engines(artifact: Artifact, components: tuple[str, ...], backend: str, device: str = "cpu",
                 threads: int = 0, cuda_graph: bool = False) -> dict[str, Engine]:
    """One loaded and activated engine per component; each file is checked against its manifest spec.
    ``onnxruntime``: an export (``device``, ``threads``; on CUDA with IO binding, ``cuda_graph`` for the U-Net and
    text encoder); ``tensorrt``: an engine folder opened for the local GPU
    (``difftrt.trt.engine_folder.open_engine_folder``), each plan with the profile its manifest records."""
    if backend == "tensorrt":
        return _open_plans(artifact, components, cuda_graph)
    if backend != "onnxruntime":
        raise UsageError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    from difftrt.backends.ort import OrtEngine

    from difftrt.backends.cuda import cupy_available

    bind = device == "cuda" and cupy_available()  # device buffers: the loop stays on the GPU
    if device == "cuda" and not bind:
        log.warning("CuPy is not installed: ONNX Runtime CUDA runs with host copies every call (pip install "
                    "cupy-cuda12x or cupy-cuda13x for device-resident sampling)")
    engines: dict[str, Engine] = {}
    for name in components:
        engine = OrtEngine(artifact.path(name), artifact.specs[name], device=device, threads=threads,
                           io_binding=bind, cuda_graph=cuda_graph)
        _start(engines, name, engine)
    return engines


def _open_plans(artifact: Artifact, components: tuple[str, ...], cuda_graph: bool) -> dict[str, Engine]:
    from difftrt.backends.tensorrt import TrtEngine
    from difftrt.trt.binding import manifest_profiles
    from difftrt.trt.engine_folder import EngineArtifact

    if not isinstance(artifact, EngineArtifact):
        raise UsageError(f"--backend tensorrt runs plans, and {artifact.folder} is an ONNX export; build them first: "
                         f"difftrt build --export {artifact.folder} --out engines/{artifact.folder.name}")
    engines: dict[str, Engine] = {}
    for name in components:
        spec = artifact.specs[name]
        profiles = manifest_profiles(artifact.plan(name), spec, str(artifact.folder / "manifest.json"))
        engine = TrtEngine(artifact.path(name), spec, profiles, flavour=artifact.flavour, cuda_graph=cuda_graph,
                           rebuild=artifact.rebuild())
        _start(engines, name, engine)
    return engines


def _start(engines: dict[str, Engine], name: str, engine: Engine) -> None:
    """Load and activate ``engine`` into ``engines``; on failure close the ones already started, then re-raise."""
    try:
        engine.load()
        engine.activate()
    except BaseException:
        for started in (*engines.values(), engine):
            started.close()
        raise
    engines[name] = engine
