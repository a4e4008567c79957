"""Self-describing artifact folders: ``manifest.json`` beside the ONNX files, with hashes, I/O and configs.

Reading an artifact verifies every file's sha256 against the manifest, so a truncated or swapped file is
caught before it runs. torch-free: this is what ``difftrt sample`` opens.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from difftrt.config import ModelConfig, model_config_from_dict, read_json
from difftrt.errors import ArtifactError, DifftrtError
from difftrt.fileio import sha256_file
from difftrt.models.specs import ComponentSpec, component_specs
from difftrt.models.tokenizer import Tokenizer

MANIFEST = "manifest.json"
FORMAT = "difftrt-onnx"
FORMAT_VERSION = 1


def library_versions(names: tuple[str, ...] = ("difftrt", "numpy", "onnxruntime", "onnx", "torch", "safetensors")) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` except the manifest, keyed by relative POSIX path."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


@dataclass(frozen=True)
class Artifact:
    """An opened, hash-verified export folder."""

    folder: Path
    manifest: dict[str, Any]
    config: ModelConfig

    @property
    def specs(self) -> dict[str, ComponentSpec]:
        return component_specs(self.config)

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self.manifest["scheduler_config"])

    def path(self, component: str) -> Path:
        return self.folder / self.manifest["components"][component]["file"]

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.folder / "tokenizer")


def resolve_folder(engine: Path, component: str = "unet") -> Path:
    """``--engine`` may name the artifact folder or the component's file inside it."""
    engine = Path(engine)
    if not engine.exists():
        raise ArtifactError(f"engine path {engine} does not exist")
    if engine.is_dir():
        return engine
    folder = engine.parent
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"no {MANIFEST} beside {engine}; pass a folder written by `difftrt export`")
    manifest = _read_manifest(folder)
    files = {c: info.get("file") for c, info in manifest.get("components", {}).items()}
    if files.get(component) != engine.name:
        owner = next((c for c, f in files.items() if f == engine.name), None)
        what = f"the {owner} component" if owner else "not a component"
        raise ArtifactError(f"{engine} is {what} of its artifact, not the {component}; pass {folder / str(files.get(component))}")
    return folder


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}; is it a folder written by `difftrt export`?")
    try:
        manifest = read_json(folder / MANIFEST)
    except DifftrtError as exc:
        raise ArtifactError(str(exc)) from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{folder / MANIFEST} is not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest


def open_artifact(engine: Path, component: str = "unet") -> Artifact:
    """Open and verify the artifact that ``engine`` names (a folder, or its ``component`` file)."""
    folder = resolve_folder(engine, component)
    manifest = _read_manifest(folder)
    for rel, digest in manifest.get("files", {}).items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in {MANIFEST} but missing")
        if sha256_file(path) != digest:
            raise ArtifactError(f"{path} does not match the sha256 in {MANIFEST}: changed or truncated since export; re-export")
    try:
        config = model_config_from_dict(manifest["model_config"])
        components = manifest["components"]
    except (KeyError, TypeError, DifftrtError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: {exc}") from None
    if component not in components:
        raise ArtifactError(f"{folder} has no {component} component")
    return Artifact(folder, manifest, config)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add format, versions and file hashes, then write ``manifest.json`` (the folder is still a temp folder)."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": library_versions(), **manifest,
            "files": hash_files(folder)}
    (folder / MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return full
