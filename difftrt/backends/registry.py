"""Backend selection, in one place: the engine file's kind chooses the backend, ``--backend`` overrides.

    .onnx (or an export folder) -> onnxruntime      .plan -> tensorrt (not available yet)

The torch reference backend is not selected here: it runs a checkpoint, not an engine file, and
``difftrt bench`` / ``difftrt eval --torch`` build it from the checkpoint an export records.
"""

from __future__ import annotations

from pathlib import Path

from difftrt.artifact import Artifact
from difftrt.backends.base import Engine
from difftrt.errors import ArtifactError, DependencyError, UsageError

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
        return "onnxruntime"  # an export folder (engine folders with plans come with the TensorRT issue)
    if engine.suffix not in SUFFIXES:
        raise ArtifactError(f"{engine}: unknown engine file kind {engine.suffix!r}; expected one of {sorted(SUFFIXES)}")
    return SUFFIXES[engine.suffix]


def require(backend: str) -> None:
    """Fail early, in one line naming what is missing, when ``backend`` cannot run here."""
    if backend == "tensorrt":
        raise DependencyError("the TensorRT backend is not available yet: difftrt cannot build or run .plan files "
                              "today; sample the ONNX export instead (difftrt sample --engine export/NAME)")
    if backend == "onnxruntime":
        from difftrt.backends.ort import import_onnxruntime

        import_onnxruntime()


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
