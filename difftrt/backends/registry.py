"""Backend selection, in one place: the engine file's kind chooses the backend, ``--backend`` overrides.

    .onnx (or an export folder) -> onnxruntime      .plan (or an engine folder) -> tensorrt

The torch reference backend is not selected here: it runs a checkpoint, not an engine file, and
``difftrt bench`` / ``difftrt eval --torch`` build it from the checkpoint an export records.
"""

from __future__ import annotations

from pathlib import Path

from difftrt.artifact import Artifact, Verify
from difftrt.backends.base import Engine
from difftrt.errors import ArtifactError, UsageError

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


def require(backend: str, engine: Path | None = None, verify: Verify = Verify.QUICK) -> None:
    """Fail early, in one line naming what is missing, when ``backend`` cannot run ``engine`` here."""
    if backend == "tensorrt":
        _require_tensorrt(Path(engine) if engine is not None else Path("."), verify)
    if backend == "onnxruntime":
        from difftrt.backends.ort import import_onnxruntime

        import_onnxruntime()


def _require_tensorrt(engine: Path, verify: Verify) -> None:
    from difftrt.artifact import MANIFEST
    from difftrt.trt import engine_folder
    from difftrt.trt.gpu import local_arch

    folder = engine if engine.is_dir() else engine.parent
    if (folder / MANIFEST).is_file() and not engine_folder.is_engine_folder(folder):
        raise UsageError(f"--backend tensorrt runs plans, and {folder} is an ONNX export; build them first: "
                         f"difftrt build --export {folder} --out engines/{folder.resolve().name}")
    engine_folder.check_runnable(engine, local_arch(), how=verify)


def open_engines(artifact: Artifact, components: tuple[str, ...], backend: str, device: str = "cpu",
                 threads: int = 0) -> dict[str, Engine]:
    """One loaded and activated engine per component; each file is checked against its manifest spec."""
    if backend != "onnxruntime":
        require(backend)  # raises, naming what is missing
        raise UsageError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    from difftrt.backends.ort import OrtEngine

    engines: dict[str, Engine] = {}
    for name in components:
        engine = OrtEngine(artifact.path(name), artifact.specs[name], device=device, threads=threads)
        engine.load()
        engine.activate()
        engines[name] = engine
    return engines
