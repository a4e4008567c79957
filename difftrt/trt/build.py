"""``difftrt build``: one TensorRT plan per component and target from a verified export, cached by key.

The key is a hash of everything the plan is built from — the ONNX file's sha256, TensorRT flavour and
version, target, precision, profile and builder flags — not of the plan's bytes (two builds of the same
inputs differ in a few bytes). A plan in the output folder whose key matches is reused, not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from difftrt.artifact import Artifact, Verify, component_digest, open_artifact
from difftrt.errors import ArtifactError, DependencyError, UsageError
from difftrt.fileio import atomic_dir
from difftrt.models.specs import COMPONENTS, ComponentSpec
from difftrt.trt import engine_folder
from difftrt.trt.gpu import local_arch
from difftrt.trt.profiles import BuildOptions, input_shapes, profile_ranges
from difftrt.trt.shim import TensorRT, import_tensorrt

FLAGS = ("STRONGLY_TYPED",)  # precision comes from the ONNX graph's own types (TensorRT 11 / RTX have no FP16 flag)
RECIPE = 1  # bump when build_plan changes how a plan is made, so older cached plans are not reused


def plan_key(onnx_sha256: str, trt: TensorRT, arch: str, spec: ComponentSpec) -> str:
    inputs = {"recipe": RECIPE, "onnx_sha256": onnx_sha256, "flavour": trt.flavour, "version": trt.version, "arch": arch,
              "precision": spec.precision.value, "profile": [r.to_json() for r in spec.dim_ranges], "flags": FLAGS}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def resolve_archs(trt: TensorRT, archs: tuple[str, ...]) -> tuple[str, ...]:
    """``--arch`` values, checked against what this TensorRT can target; default: the local GPU's."""
    local = local_arch()
    if not archs:
        if local is None:
            choices = ", ".join(trt.arch_choices()) or "the local GPU's only"
            raise UsageError(f"no CUDA GPU here to build for: pass --arch (this {trt.flavour} offers {choices})")
        archs = (local,)
    for arch in archs:
        if trt.builds_for_any_arch and arch not in trt.arch_choices():
            raise UsageError(f"--arch {arch}: {trt.flavour} {trt.version} cannot target it; it offers "
                             f"{', '.join(trt.arch_choices())}")
        if not trt.builds_for_any_arch and arch != local:
            raise UsageError(f"--arch {arch}: full TensorRT builds for the GPU it runs on ({local or 'none here'}); "
                             "use tensorrt-rtx to build for other targets")
    return tuple(dict.fromkeys(archs))


def build_plan(trt: TensorRT, onnx_path: Path, spec: ComponentSpec, arch: str) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build it for ``arch`` with one profile."""
    try:
        plan = _build(trt, onnx_path, spec, arch)
    except (RuntimeError, TypeError, ValueError) as exc:  # TensorRT's bindings raise these on bad input
        raise DependencyError(f"TensorRT failed building {spec.name} for {arch}: {str(exc).strip()[:300]}") from None
    if plan is None:
        raise DependencyError(f"TensorRT could not build {spec.name} for {arch} (see its log above)")
    return bytes(plan)


def _build(trt: TensorRT, onnx_path: Path, spec: ComponentSpec, arch: str) -> Any:
    t = trt.module
    logger = t.Logger(t.Logger.ERROR)
    builder = t.Builder(logger)
    network = builder.create_network(1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = t.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    if trt.builds_for_any_arch:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(t.ComputeCapability, arch.upper()), 0)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in input_shapes(spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config)


def _previous_plans(out: Path) -> dict[str, dict[str, Any]]:
    """key -> plan entry of an existing engine folder (its files verified), or {} when there is none to reuse."""
    try:
        manifest = engine_folder.read_manifest(out)
        engine_folder.verify(out, manifest, Verify.FULL)
        return {str(p["key"]): {"file": str(p["file"]), "build_seconds": float(p["build_seconds"])}
                for p in manifest["plans"]}
    except (ArtifactError, KeyError, TypeError, ValueError):
        return {}


def check_out(out: Path, export: Path, archs: tuple[str, ...], overwrite: bool) -> None:
    """``--out`` may not overlap the export; an existing one needs ``--overwrite`` unless it is an engine folder of
    the same export whose targets are all rebuilt (so no plan is dropped without being asked)."""
    a, b = out.resolve(), export.resolve()
    if a == b or b in a.parents or a in b.parents:
        raise UsageError(f"--out {out} overlaps the export {export}; choose a folder outside it, e.g. engines/{b.name}")
    if not out.exists() or overwrite:
        return
    if not engine_folder.is_engine_folder(out):
        raise UsageError(f"{out} exists and is not an engine folder; choose another --out or pass --overwrite")
    try:
        manifest = engine_folder.read_manifest(out)
        same_export = Path(manifest["export"]["folder"]).resolve() == b
        dropped = sorted(set(manifest["archs"]) - set(archs))
    except (ArtifactError, KeyError, TypeError):
        raise UsageError(f"{out} is an unreadable engine folder; pass --overwrite to replace it") from None
    if not same_export:
        raise UsageError(f"{out} holds plans of another export ({manifest['export']['folder']}); pass --overwrite")
    if dropped:
        raise UsageError(f"{out} also holds plans for {', '.join(dropped)}; add --arch {' --arch '.join(dropped)}, "
                         "or pass --overwrite to drop them")


def build_engines(export: Path, out: Path | None = None, archs: tuple[str, ...] = (),
                  options: BuildOptions = BuildOptions(), overwrite: bool = False, flavour: str | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Build (or reuse) every plan; write ``out`` (default engines/NAME) atomically with its manifest."""
    artifact = open_artifact(Path(export), "unet", Verify.FULL, needs=COMPONENTS)
    trt = import_tensorrt(flavour)
    archs = resolve_archs(trt, archs)
    out = Path(out) if out is not None else Path("engines") / artifact.folder.name
    check_out(out, artifact.folder, archs, overwrite)
    previous = _previous_plans(out) if out.exists() else {}
    specs = {name: replace(artifact.specs[name], dim_ranges=profile_ranges(artifact.specs[name], artifact.config,
                                                                          options, str(artifact.folder)))
             for name in COMPONENTS}  # every profile checked before the first (slow) build
    progress(f"building with {trt.flavour} {trt.version} for {', '.join(archs)}")
    plans = []
    with atomic_dir(out, overwrite=True) as tmp:
        for name, spec in specs.items():
            onnx_rel = artifact.manifest["components"][name]["file"]
            onnx_sha = component_digest(artifact.manifest, name)
            for arch in archs:
                plans.append(_one_plan(trt, artifact, tmp, name, spec, arch, onnx_rel, onnx_sha, previous, out, progress))
        shutil.copytree(artifact.folder / "tokenizer", tmp / "tokenizer")
        manifest = engine_folder.write_manifest(tmp, artifact, trt, archs, options, specs, plans)
    return {**manifest, "out": str(out)}


def _one_plan(trt: TensorRT, artifact: Artifact, tmp: Path, name: str, spec: ComponentSpec, arch: str, onnx_rel: str,
              onnx_sha: str, previous: dict[str, dict[str, Any]], out: Path,
              progress: Callable[[str], None]) -> dict[str, Any]:
    key = plan_key(onnx_sha, trt, arch, spec)
    file = f"{name}.{arch}.plan"
    entry = {"component": name, "arch": arch, "file": file, "key": key, "onnx": onnx_rel, "onnx_sha256": onnx_sha,
             "precision": spec.precision.value, "profile": [r.to_json() for r in spec.dim_ranges], "flags": list(FLAGS)}
    if key in previous:
        shutil.copy2(out / previous[key]["file"], tmp / file)
        progress(f"{name} ({arch}): reused the cached plan (same key)")
        return {**entry, "build_seconds": previous[key]["build_seconds"], "reused": True}
    start = time.perf_counter()
    (tmp / file).write_bytes(build_plan(trt, artifact.folder / onnx_rel, spec, arch))
    seconds = time.perf_counter() - start
    progress(f"{name} ({arch}): built in {seconds:.1f} s, {(tmp / file).stat().st_size / 2**20:.1f} MiB")
    return {**entry, "build_seconds": round(seconds, 2), "reused": False}

