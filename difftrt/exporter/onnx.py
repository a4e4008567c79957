"""Export each component to ONNX (dynamic batch and spatial size), validate it against torch, write the folder.

Validation runs ONNX Runtime (CPU) and the torch module on the same random inputs from the component's spec,
at two batch sizes and, for spatial components, a second resolution. An element passes when
``|ort - torch| <= atol + rtol * |torch|``; the worst absolute and relative errors go into the manifest.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difftrt.artifact import write_manifest
from difftrt.backends.base import check_engine_matches
from difftrt.backends.ort import OrtEngine
from difftrt.backends.torch_ref import TorchEngine, component_modules
from difftrt.config import model_config_to_dict
from difftrt.errors import ValidationError
from difftrt.fileio import atomic_dir
from difftrt.models.checkpoint import Checkpoint
from difftrt.models.specs import ComponentSpec, component_specs, dims

log = logging.getLogger(__name__)
OPSET = 17


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4  # absolute floor, for outputs near zero
    rtol: float = 1e-3  # relative to the torch value


def _export_one(module: torch.nn.Module, spec: ComponentSpec, sample: dict[str, np.ndarray], path: Path) -> None:
    args = tuple(torch.from_numpy(sample[name]) for name in spec.input_names)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
        torch.onnx.export(module, args, str(path), input_names=list(spec.input_names),
                          output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes(),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def validation_cases(ckpt: Checkpoint, component: str) -> list[dict[str, int]]:
    """Two batch sizes at the default size, plus (for spatial components) batch 2 at a larger size."""
    cfg = ckpt.config
    cases = [dims(cfg, 1), dims(cfg, 3)]
    if component != "text_encoder":
        s = cfg.unet.sample_size + cfg.unet.downsample_factor
        cases.append(dims(cfg, 2, s, cfg.unet.sample_size))
    return cases


def compare(engine, reference, spec: ComponentSpec, cases: list[dict[str, int]], tol: Tolerance) -> dict:
    """Run both on each case's sample inputs; return the worst errors, or raise ``ValidationError``."""
    results = []
    for seed, case in enumerate(cases):
        feeds = spec.sample_inputs(case, seed=seed)
        got = engine.run(feeds)[spec.output_names[0]]
        want = reference.run(feeds)[spec.output_names[0]]
        if got.shape != want.shape:
            raise ValidationError(f"{spec.name}: ONNX output shape {got.shape} != torch {want.shape} at {case}")
        err = np.abs(got.astype(np.float64) - want)
        rel = err / (np.abs(want) + tol.atol)
        results.append({"dims": case, "max_abs_err": float(err.max()), "max_rel_err": float(rel.max()),
                        "passed": bool(np.all(err <= tol.atol + tol.rtol * np.abs(want))),
                        "finite": bool(np.isfinite(got).all())})
    summary = {"tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "cases": results,
               "max_abs_err": max(r["max_abs_err"] for r in results),
               "max_rel_err": max(r["max_rel_err"] for r in results)}
    bad = [r for r in results if not (r["passed"] and r["finite"])]
    if bad:
        raise ValidationError(
            f"{spec.name}: ONNX disagrees with torch beyond atol={tol.atol}, rtol={tol.rtol} "
            f"(max abs err {summary['max_abs_err']:.3g}, max rel err {summary['max_rel_err']:.3g} at {bad[0]['dims']})"
        )
    return summary


def export_checkpoint(ckpt: Checkpoint, out: Path, *, overwrite: bool = False, tol: Tolerance = Tolerance(),
                      source: str | None = None, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Export, validate and write ``out`` atomically; returns the manifest. Nothing is left behind on failure."""
    specs = component_specs(ckpt.config)
    modules = component_modules(ckpt)
    components = {}
    with atomic_dir(Path(out), overwrite) as tmp:
        for name, spec in specs.items():
            progress(f"exporting {name}")
            path = tmp / spec.filename
            _export_one(modules[name], spec, spec.sample_inputs(dims(ckpt.config, 2)), path)
            engine = OrtEngine(path, name)
            check_engine_matches(engine, spec, str(path))
            progress(f"validating {name}")
            validation = compare(engine, TorchEngine(modules[name], spec), spec, validation_cases(ckpt, name), tol)
            components[name] = {"file": spec.filename, **spec.to_json(),
                                "dim_ranges": [list(r) for r in spec.dim_ranges], "validation": validation}
        ckpt.tokenizer.save(tmp / "tokenizer")
        manifest = {"source_checkpoint": source, "opset": OPSET, "exporter": "torch.onnx (TorchScript)",
                    "model_config": model_config_to_dict(ckpt.config),
                    "scheduler_config": ckpt.scheduler_config, "tokenizer": ckpt.tokenizer.config(),
                    "components": components}
        return write_manifest(tmp, manifest)
