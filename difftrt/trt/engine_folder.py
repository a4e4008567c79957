"""Engine folders: the plans of one export, their manifest, and the checks made before a plan may run.

    ENGINES/manifest.json        format, builder (flavour, version), targets, build options, the export it came
                                 from (folder, manifest sha256), the model/scheduler/tokenizer configs, each
                                 component's spec with the plan's own ranges, and per plan: file, key, ONNX sha256,
                                 arch, precision, profile, flags, build time; file sizes and sha256s
    ENGINES/unet.sm86.plan ...   one plan per component and target
    ENGINES/tokenizer/           copied from the export: the folder samples on its own

``check_runnable`` says whether a plan may run here; ``open_engine_folder`` then reads the folder as an export
is read (an ``EngineArtifact``), its component files being the plans for the local GPU's arch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difftrt.artifact import (MANIFEST, Artifact, Verify, hash_files, library_versions, load_manifest,
                              manifest_digest, verify_files, write_stamp)
from difftrt.config import model_config_from_dict, read_json
from difftrt.errors import ArtifactError, DependencyError, DifftrtError
from difftrt.models.specs import COMPONENTS, ComponentSpec

FORMAT = "difftrt-engines"
FORMAT_VERSION = 1


def is_engine_folder(folder: Path) -> bool:
    try:
        return read_json(Path(folder) / MANIFEST).get("format") == FORMAT
    except DifftrtError:
        return False


def read_manifest(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    manifest = load_manifest(folder, "build the engines with `difftrt build`")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{folder / MANIFEST} is not a {FORMAT} v{FORMAT_VERSION} manifest; build the engines "
                            "again with `difftrt build`")
    return manifest


def verify(folder: Path, manifest: dict[str, Any], how: Verify = Verify.QUICK) -> Verify:
    try:
        files = {rel: {"sha256": str(v["sha256"]), "size": int(v["size"])} for rel, v in manifest["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: {exc}") from None
    return verify_files(Path(folder), files, how)


def write_manifest(folder: Path, artifact: Artifact, trt: Any, archs: tuple[str, ...], options: Any,
                   specs: dict[str, ComponentSpec], plans: list[dict[str, Any]]) -> dict[str, Any]:
    export_digest = manifest_digest(artifact.folder)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "versions": library_versions(),
        "builder": {"flavour": trt.flavour, "version": trt.version}, "archs": list(archs),
        "options": {"max_batch": options.max_batch, "sizes": list(options.sizes), "static": options.static},
        "export": {"folder": str(artifact.folder), "manifest_sha256": export_digest},
        "model_config": artifact.manifest["model_config"], "scheduler_config": artifact.manifest["scheduler_config"],
        "tokenizer": artifact.manifest["tokenizer"],
        "components": {name: spec.to_json() for name, spec in specs.items()},
        "plans": plans, "files": hash_files(folder),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_stamp(folder, manifest["files"])
    return manifest


def resolve(engine: Path) -> Path:
    """The engine folder that ``engine`` (the folder or one of its plans) names."""
    engine = Path(engine)
    folder = engine if engine.is_dir() else engine.parent
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"no engine {MANIFEST} beside {engine}; build the plans with "
                            "`difftrt build --export export/NAME --out engines/NAME`")
    return folder


def rebuild_command(manifest: dict[str, Any], folder: Path, add_arch: str | None = None) -> str:
    """The ``difftrt build`` line that makes these plans again (with the same options), plus ``add_arch``."""
    archs = [*manifest.get("archs", []), *([add_arch] if add_arch else [])]
    options = manifest.get("options", {})
    parts = ["difftrt build --export", str(manifest.get("export", {}).get("folder", "export/NAME")), "--out", str(folder),
             *(f"--arch {a}" for a in archs)]
    if options.get("max_batch"):
        parts.append(f"--max-batch {options['max_batch']}")
    if options.get("sizes"):
        parts.append("--sizes " + ",".join(str(s) for s in options["sizes"]))
    if options.get("static"):
        parts.append("--static")
    return " ".join(parts)


def check_runnable(engine: Path, local_arch: str | None, installed: Any = None, how: Verify = Verify.QUICK) -> Verify:
    """Everything that must hold before a plan of ``engine`` may run here, each failure one line with the fix:
    a valid manifest and intact plans (``how``: the quick or the full check), the export unchanged since the
    build (when it is still there), TensorRT of the same flavour and version, a CUDA GPU of the plan's target,
    CuPy. ``installed``: the ``TensorRT`` to compare, an exception from looking for it, or None to import the
    manifest's flavour. Returns the file check that decided (``Verify``)."""
    engine = Path(engine)
    folder = resolve(engine)
    manifest = read_manifest(folder)
    checked = verify(folder, manifest, how)
    try:
        export, builder = manifest["export"], manifest["builder"]
        export_manifest = Path(export["folder"]) / MANIFEST
        built_for = [str(p["arch"]) for p in manifest["plans"] if not engine.is_file() or p["file"] == engine.name]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: {exc}") from None
    if not built_for:
        raise ArtifactError(f"{engine} is not listed in {folder / MANIFEST}")
    if export_manifest.is_file() and manifest_digest(export_manifest.parent) != export["manifest_sha256"]:
        raise ArtifactError(f"the export {export['folder']} changed since these plans were built; rebuild: "
                            f"{rebuild_command(manifest, folder)}")
    if installed is None:
        from difftrt.trt.shim import import_tensorrt

        try:
            installed = import_tensorrt(builder["flavour"])
        except DependencyError as exc:
            installed = exc
    if isinstance(installed, Exception):
        raise DependencyError(f"running TensorRT plans needs {builder['flavour']} on a CUDA GPU machine ({installed})")
    if (installed.flavour, installed.version) != (builder["flavour"], builder["version"]):
        raise ArtifactError(f"{folder} was built with {builder['flavour']} {builder['version']}, this machine has "
                            f"{installed.flavour} {installed.version}; rebuild: {rebuild_command(manifest, folder)}")
    targets = sorted(set(built_for), key=built_for.index)
    if local_arch is None:
        raise DependencyError(f"no CUDA GPU here: TensorRT plans run only on an NVIDIA GPU (these are built for "
                              f"{', '.join(targets)}); sample the ONNX export instead: "
                              f"difftrt sample --engine {export['folder']}")
    if local_arch not in targets:
        raise ArtifactError(f"{engine} holds plans for {', '.join(targets)}, this GPU is {local_arch}; "
                            f"rebuild: {rebuild_command(manifest, folder, local_arch)}")
    from difftrt.backends.cuda import import_cupy

    import_cupy()  # the runtime's device arrays and streams; raises, naming the CuPy wheel to install
    return checked


@dataclass(frozen=True)
class EngineArtifact(Artifact):
    """An opened engine folder, read as an export is (``config``, ``specs``, ``scheduler_config``, ``tokenizer()``
    from its manifest and tokenizer/ copy), whose component files are the plans built for ``arch``."""

    arch: str = ""

    def plan(self, component: str) -> dict[str, Any]:
        """The manifest's entry for ``component``'s plan for ``arch`` (file, key, profile, ...)."""
        entry = next((p for p in self.manifest["plans"] if p.get("component") == component and p.get("arch") == self.arch),
                     None)
        if entry is None:
            raise ArtifactError(f"{self.folder} has no {component} plan for {self.arch}; rebuild: "
                                f"{rebuild_command(self.manifest, self.folder, self.arch)}")
        return entry

    def path(self, component: str) -> Path:
        return self.folder / str(self.plan(component)["file"])

    @property
    def flavour(self) -> str:
        return str(self.manifest["builder"]["flavour"])

    def rebuild(self) -> str:
        return rebuild_command(self.manifest, self.folder)


def open_engine_folder(engine: Path, arch: str, how: Verify = Verify.QUICK, needs: tuple[str, ...] = (),
                       checked: Verify | None = None) -> EngineArtifact:
    """The engine folder ``engine`` names (the folder or one of its plans) for running ``arch``'s plans; ``needs``:
    the components that must have one. ``checked``: the file check ``check_runnable`` just made (then none is
    repeated); else the files are verified here (``how``)."""
    folder = resolve(engine)
    manifest = read_manifest(folder)
    verified = checked if checked is not None else verify(folder, manifest, how)
    try:
        config = model_config_from_dict(manifest["model_config"])
        specs = {name: ComponentSpec.from_json(name, manifest["components"][name]) for name in COMPONENTS
                 if name in manifest["components"]}
        missing = [key for key in ("scheduler_config", "builder", "plans") if key not in manifest]
    except (KeyError, TypeError, ValueError, AttributeError, DifftrtError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: {exc}") from None
    if missing:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: no {', '.join(missing)}")
    if not (folder / "tokenizer").is_dir():
        raise ArtifactError(f"{folder} has no tokenizer/ folder; rebuild: {rebuild_command(manifest, folder)}")
    artifact = EngineArtifact(Path(folder), manifest, config, specs, verified, arch)
    for name in needs:
        if name not in specs:
            raise ArtifactError(f"{folder} has no {name} component")
        artifact.plan(name)
    return artifact
