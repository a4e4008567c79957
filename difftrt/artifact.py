"""Self-describing export folders: ``manifest.json`` with each component's spec, hashes, configs and versions.

    EXPORT/manifest.json             format, versions, configs, per-component spec + validation, file hashes
    EXPORT/unet/model.onnx           one subfolder per component (room for ONNX external-data files)
    EXPORT/text_encoder/model.onnx   EXPORT/vae_decoder/model.onnx   EXPORT/vae_encoder/model.onnx
    EXPORT/tokenizer/                EXPORT/.verified.json (the quick-check stamp; not part of the export)

What an open verifies (``Verify``): always that every listed file exists with the size the manifest
records. ``QUICK`` (each ``difftrt sample``) then compares each file's size and modification time with the
stamp written by the last full check; when all match, no file is read. Anything else — no stamp, a copied
folder with new mtimes, a touched file — falls back to ``FULL``: the sha256 of every file against the
manifest, after which the stamp is refreshed (when the folder is writable). So an intact copy is never
refused, and a changed file is always caught unless it kept both its size and its mtime; ``--verify``
forces the full check. torch-free: this is what ``difftrt sample`` opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from difftrt.config import ModelConfig, model_config_from_dict, read_json
from difftrt.errors import ArtifactError, DifftrtError, OutputError
from difftrt.fileio import sha256_file, write_bytes_atomic
from difftrt.models.specs import COMPONENTS, ComponentSpec
from difftrt.models.tokenizer_protocol import load_tokenizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STAMP = ".verified.json"
FORMAT = "difftrt-onnx"
FORMAT_VERSION = 2  # 2: one subfolder per component, specs and precision in the manifest, sizes beside hashes
MODEL_FILE = "model.onnx"


class Verify(str, Enum):
    QUICK = "quick"  # sizes + the stamp's mtimes, falling back to FULL
    FULL = "full"  # sha256 of every file


def component_file(component: str) -> str:
    """Where a component's ONNX file lives inside an export folder."""
    return f"{component}/{MODEL_FILE}"


def component_digest(manifest: dict[str, Any], component: str) -> str:
    """The sha256 that names a component's ONNX graph with its weights: the model file's own when it holds them,
    else one over every file of its subfolder (model.onnx and its external data), so a changed weight file
    changes it too."""
    folder = PurePosixPath(manifest["components"][component]["file"]).parent
    files = sorted((rel, info["sha256"]) for rel, info in manifest["files"].items() if PurePosixPath(rel).parent == folder)
    if len(files) == 1:
        return files[0][1]
    return hashlib.sha256("".join(f"{rel} {digest}\n" for rel, digest in files).encode()).hexdigest()


def library_versions(names: tuple[str, ...] = ("difftrt", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch",
                                               "safetensors", "diffusers", "transformers")) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _artifact_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (MANIFEST, STAMP)]


def hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file below ``folder`` except the manifest and stamp, keyed by relative POSIX path."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in _artifact_files(folder)}


@dataclass(frozen=True)
class Artifact:
    """An opened, verified export folder; ``specs`` are the manifest's, never recomputed."""

    folder: Path
    manifest: dict[str, Any]
    config: ModelConfig
    specs: dict[str, ComponentSpec]
    verified: Verify  # how the files were checked on this open

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return dict(self.manifest["scheduler_config"])

    def path(self, component: str) -> Path:
        return self.folder / self.manifest["components"][component]["file"]

    def tokenizer(self) -> Any:
        """The export's tokenizer (difftrt's word-level one, or CLIP's BPE for Stable Diffusion weights)."""
        return load_tokenizer(self.folder / "tokenizer")


def resolve_folder(engine: Path, component: str = "unet") -> Path:
    """``--engine`` may name the export folder, or ``component``'s subfolder or file inside it."""
    given = Path(engine)
    if not given.exists():
        raise ArtifactError(f"engine path {given} does not exist")
    path = Path(os.path.abspath(given))  # normalises .. without resolving links
    if path.is_dir() and (path / MANIFEST).is_file():
        return path
    if path.is_dir() and not (path.parent / MANIFEST).is_file():
        raise ArtifactError(f"{given} has no {MANIFEST}; is it a folder written by `difftrt export`?")
    folder = path.parent if path.is_dir() else next(
        (p for p in (path.parent, path.parent.parent) if (p / MANIFEST).is_file()), None)
    if folder is None:
        raise ArtifactError(f"no {MANIFEST} beside {given}; pass a folder written by `difftrt export`")
    manifest = _read_manifest(folder)
    rel = path.relative_to(folder).as_posix()
    try:
        files = {c: info["file"] for c, info in manifest["components"].items()}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: {exc}") from None
    if rel not in (files.get(component), str(PurePosixPath(str(files.get(component))).parent)):
        owner = next((c for c, f in files.items() if rel in (f, str(PurePosixPath(f).parent))), None)
        what = f"the {owner} component" if owner else "not a component"
        raise ArtifactError(f"{given} is {what} of its export, not the {component}; pass {folder / str(files.get(component))}")
    return folder


def load_manifest(folder: Path, missing: str) -> dict[str, Any]:
    """``folder``'s manifest.json as a dict; absent or unreadable is an ``ArtifactError`` (``missing``: the fix)."""
    if not (Path(folder) / MANIFEST).is_file():
        raise ArtifactError(f"{folder} has no {MANIFEST}; {missing}")
    try:
        return read_json(Path(folder) / MANIFEST)
    except DifftrtError as exc:
        raise ArtifactError(str(exc)) from None


def _read_manifest(folder: Path) -> dict[str, Any]:
    manifest = load_manifest(folder, "is it a folder written by `difftrt export`?")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{folder} was written by another difftrt (export format v{manifest.get('format_version')}, "
                            f"this one reads v{FORMAT_VERSION}); export it again with `difftrt export`")
    return manifest


def manifest_digest(folder: Path) -> str:
    """sha256 of an export's (or engine folder's) manifest.json, which holds every file's hash: the folder's identity."""
    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()


def _stamp(folder: Path, files: dict[str, Any], digest: str) -> dict[str, Any]:
    entries = {}
    for rel in files:
        st = (folder / rel).stat()
        entries[rel] = [st.st_size, st.st_mtime_ns]
    return {"manifest_sha256": digest, "files": entries}


def verify_files(folder: Path, files: dict[str, Any], how: Verify = Verify.QUICK) -> Verify:
    """Check ``files`` (the manifest's ``files``) below ``folder``; returns the check that decided."""
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in {MANIFEST} but missing")
        size = path.stat().st_size
        if size != info["size"]:
            raise ArtifactError(f"{path} is {size} bytes, {MANIFEST} says {info['size']}: changed or truncated "
                                "since export; export it again")
    digest = manifest_digest(folder)
    if how is Verify.QUICK:
        try:
            stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stamp = None
        if stamp == _stamp(folder, files, digest):
            return Verify.QUICK
    for rel, info in files.items():
        if sha256_file(folder / rel) != info["sha256"]:
            raise ArtifactError(f"{folder / rel} does not match the sha256 in {MANIFEST}: changed since export; "
                                "export it again")
    write_stamp(folder, files, digest)
    return Verify.FULL


def write_stamp(folder: Path, files: dict[str, Any], digest: str | None = None) -> None:
    """Record sizes and mtimes after a full check; a read-only folder just keeps being checked in full."""
    if digest is None:
        digest = manifest_digest(folder)
    with contextlib.suppress(OutputError, OSError):
        write_bytes_atomic(folder / STAMP, json.dumps(_stamp(folder, files, digest)).encode())
        return
    log.debug("cannot write %s; every open of %s will hash its files", STAMP, folder)


def _inside(rel: str) -> bool:
    path = PurePosixPath(rel)
    return not path.is_absolute() and ".." not in path.parts


def open_artifact(engine: Path, component: str = "unet", verify: Verify = Verify.QUICK,
                  needs: tuple[str, ...] = ()) -> Artifact:
    """Open and verify the export that ``engine`` names (the folder, or ``component``'s subfolder or file);
    ``component`` and every one of ``needs`` must be in it, and each component's file in the hash list."""
    folder = resolve_folder(engine, component)
    manifest = _read_manifest(folder)
    try:
        config = model_config_from_dict(manifest["model_config"])
        components = manifest["components"]
        files = {rel: {"sha256": str(v["sha256"]), "size": int(v["size"])} for rel, v in manifest["files"].items()}
        specs = {name: ComponentSpec.from_json(name, components[name]) for name in COMPONENTS if name in components}
        component_files = {name: str(components[name]["file"]) for name in specs}
    except (KeyError, TypeError, ValueError, AttributeError, DifftrtError) as exc:
        raise ArtifactError(f"{folder / MANIFEST} is incomplete: {exc}") from None
    for name in (component, *needs):
        if name not in specs:
            raise ArtifactError(f"{folder} has no {name} component")
    for rel in (*files, *component_files.values()):
        if not _inside(rel) or rel not in files:
            raise ArtifactError(f"{folder / MANIFEST} lists {rel!r}, which is not a hashed file inside the export")
    verified = verify_files(folder, files, verify)
    return Artifact(folder, manifest, config, specs, verified)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add format, versions and file hashes, write ``manifest.json`` and the stamp (the folder is still a temp
    folder, so the hashes are of exactly the files that will appear)."""
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": library_versions(), **manifest,
            "files": hash_files(folder)}
    (folder / MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    write_stamp(folder, full["files"])
    return full
