"""Export each component to ONNX (dynamic batch and spatial size), validate it against torch, write the folder.

Validation runs ONNX Runtime (CPU) and the torch module on the same random inputs from the component's spec
at the corners of its recorded ranges (every range at its min, every range at its max), at its opt point,
and (for spatial components) at a non-square size with another batch, so every range the manifest records
is one that was run. An element passes when ``|ort - torch| <= atol + rtol * |torch|``; the worst absolute
and relative errors go into the manifest.

The tracer's warnings are not hidden: they are how torch says a value was frozen into the graph. Each
distinct one is logged and recorded in the manifest (``export_warnings``); the known-harmless ones
(``BENIGN_WARNINGS``: size checks, copies, branches on sizes the spec fixes) are marked so and not printed.
"""

from __future__ import annotations

import linecache
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from difftrt.artifact import component_file, write_manifest
from difftrt.backends.ort import OrtEngine
from difftrt.backends.torch_ref import TorchEngine
from difftrt.config import ModelConfig, model_config_to_dict
from difftrt.errors import ValidationError
from difftrt.fileio import atomic_dir
from difftrt.exporter.external_data import DATA_FILE, gather_external_data
from difftrt.exporter.precision import at_precision
from difftrt.models.specs import DEFAULT_MAX_BATCH, ComponentSpec, Precision, component_specs

log = logging.getLogger(__name__)
OPSET = 17
BOOL = "Converting a tensor to a Python boolean"
# (message start, file suffix, source line start or "" for any line): exporter warnings known not to change the
# graph's numbers over the ranges the specs record. Matched on the source line's text, so a library release that
# moves or changes the line makes its warning count as a real one again.
BENIGN_WARNINGS = (
    # F.group_norm's _verify_batch_size turns a product of sizes into a bool to raise in training
    (BOOL, "torch/nn/functional.py", ""),
    # the Slice ops torch cannot fold stay in the graph, computed at run time
    ("Constant folding - Only steps=1 can be constant folded", "", ""),
    # diffusers: channel checks, and contiguous() copies on big tensors (the same values)
    (BOOL, "diffusers/models/downsampling.py", "assert hidden_states.shape[1] == self.channels"),
    (BOOL, "diffusers/models/upsampling.py", "assert hidden_states.shape[1] == self.channels"),
    (BOOL, "diffusers/models/upsampling.py", "if hidden_states.shape[0] >= 64:"),
    (BOOL, "diffusers/models/upsampling.py", "if hidden_states.numel() * scale_factor > pow(2, 31):"),
    # frozen to False: every latent side in the ranges is a multiple of the U-Net's factor, 2 ** num_upsamplers
    (BOOL, "diffusers/models/unets/unet_2d_condition.py", "if dim % default_overall_up_factor != 0:"),
    # transformers' CLIP: branches on the sequence length, which the spec fixes at the tokenizer's max length
    (BOOL, "transformers/models/clip/modeling_clip.py", "if seq_length > max_position_embedding:"),
    (BOOL, "transformers/masking_utils.py", "if (q_length == 1 or kv_length == q_length)"),
    (BOOL, "transformers/integrations/sdpa_attention.py", "is_causal = q_length > 1"),
    (BOOL, "transformers/integrations/sdpa_attention.py", "if is_causal and attention_mask is None and q_length > 1"),
)


def is_benign(message: str, filename: str, lineno: int) -> bool:
    path = Path(filename).as_posix()
    code = linecache.getline(filename, lineno).strip()
    return any(message.startswith(m) and path.endswith(f) and code.startswith(c) for m, f, c in BENIGN_WARNINGS)


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4  # absolute floor, for outputs near zero
    rtol: float = 1e-3  # relative to the torch value


# Against the fp32 torch model. fp16: the bundled model's U-Net, text encoder and VAE decoder differ from fp32
# by at most 3-5e-3 in torch fp16 (outputs up to ~4 in magnitude), so 2e-2 leaves a 4x margin.
DEFAULT_TOLERANCES = {Precision.FP32: Tolerance(1e-4, 1e-3), Precision.FP16: Tolerance(2e-2, 2e-2),
                      Precision.BF16: Tolerance(1e-1, 5e-2)}
# fp32 per component, the absolute floors optimum validates Stable Diffusion exports with: a CLIP text encoder's
# deep LayerNorm stack and a VAE's large activations stray further from torch than the U-Net does.
FP32_TOLERANCES = {"text_encoder": Tolerance(1e-3, 1e-3), "unet": Tolerance(1e-4, 1e-3),
                   "vae_decoder": Tolerance(3e-4, 1e-3), "vae_encoder": Tolerance(3e-4, 1e-3)}


def default_tolerance(component: str, precision: Precision) -> Tolerance:
    """The bound a component is validated with at ``precision`` (recorded in the manifest beside its errors)."""
    if precision is Precision.FP32:
        return FP32_TOLERANCES.get(component, DEFAULT_TOLERANCES[precision])
    return DEFAULT_TOLERANCES[precision]


def _export_one(module: torch.nn.Module, spec: ComponentSpec, path: Path, external_data: bool = False) -> list[dict]:
    """Trace ``module`` at the spec's opt point into ``path`` (its weights in one external file beside it when over
    protobuf's limit, or when ``external_data``); returns the distinct warnings the exporter raised."""
    sample = spec.sample_inputs(spec.profile("opt"))
    args = tuple(torch.from_numpy(sample[name]) for name in spec.input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(module, args, str(path), input_names=list(spec.input_names),
                          output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes(),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    gather_external_data(path, always=external_data)
    found: dict[tuple, dict] = {}
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, FutureWarning)):
            continue  # the TorchScript exporter's own deprecation notices say nothing about this graph
        message = str(w.message).splitlines()[0]
        source = f"{Path(w.filename).as_posix().rpartition('site-packages/')[2]}:{w.lineno}"
        benign = is_benign(message, w.filename, w.lineno)
        found.setdefault((w.category.__name__, message, source),
                         {"category": w.category.__name__, "message": message, "source": source, "benign": benign})
    for entry in found.values():
        log.debug("%s export: %s: %s (%s, benign: %s)", spec.name, entry["category"], entry["message"],
                  entry["source"], entry["benign"])
    return list(found.values())


def validation_cases(spec: ComponentSpec) -> list[dict[str, int]]:
    """min corner, opt, max corner, and for spatial components batch 3 (or the max) at a non-square size."""
    cases = [spec.profile("min"), spec.profile("opt"), spec.profile("max")]
    spatial = [r for r in spec.dim_ranges if r.name != "batch"]
    if spatial:
        odd = spec.profile("opt")
        odd["batch"] = min(3, spec.dim_range("batch").max)
        first = spatial[0]
        # another side, still a multiple of the dimension's (min is one): above opt if the range allows, else below
        odd[first.name] = first.opt + first.min if first.opt + first.min <= first.max else max(first.opt - first.min,
                                                                                                first.min)
        cases.append(odd)
    return [dict(c) for c in {tuple(sorted(c.items())): c for c in cases}.values()]


def compare(engine, reference, spec: ComponentSpec, cases: list[dict[str, int]], tol: Tolerance) -> dict:
    """Run both on each case's sample inputs (the reference gets the same values in its own dtypes: an fp16
    engine is compared with the fp32 model); return the worst errors, or raise ``ValidationError``."""
    results = []
    for seed, case in enumerate(cases):
        feeds = spec.sample_inputs(case, seed=seed)
        ref_feeds = {t.name: feeds[t.name].astype(t.dtype) for t in reference.spec.inputs}
        engine.ready({name: array.shape for name, array in feeds.items()})
        reference.ready({name: array.shape for name, array in ref_feeds.items()})
        got = engine.infer(feeds)[spec.output_names[0]].astype(np.float64)
        want = reference.infer(ref_feeds)[spec.output_names[0]]
        if got.shape != want.shape:
            raise ValidationError(f"{spec.name}: ONNX output shape {got.shape} != torch {want.shape} at {case}")
        nonfinite = int(np.size(got) - np.count_nonzero(np.isfinite(got)))
        err = np.abs(np.where(np.isfinite(got), got, 0.0) - want)
        rel = err / (np.abs(want) + tol.atol)
        results.append({"dims": case, "max_abs_err": float(err.max()), "max_rel_err": float(rel.max()),
                        "passed": bool(np.all(err <= tol.atol + tol.rtol * np.abs(want))),
                        "finite": nonfinite == 0, "nonfinite": nonfinite})
    summary = {"precision": spec.precision.value, "reference": "torch fp32",
               "tolerance": {"atol": tol.atol, "rtol": tol.rtol}, "cases": results,
               "max_abs_err": max(r["max_abs_err"] for r in results),
               "max_rel_err": max(r["max_rel_err"] for r in results),
               "nonfinite": sum(r["nonfinite"] for r in results)}
    if summary["nonfinite"]:
        first = next(r for r in results if r["nonfinite"])
        raise ValidationError(f"{spec.name}: the {spec.precision.value} ONNX output has {first['nonfinite']} NaN/inf "
                              f"values at {first['dims']} (the fp32 model has none there); keep it in fp32")
    bad = [r for r in results if not r["passed"]]
    if bad:
        raise ValidationError(
            f"{spec.name}: ONNX disagrees with torch beyond atol={tol.atol}, rtol={tol.rtol} "
            f"(max abs err {summary['max_abs_err']:.3g}, max rel err {summary['max_rel_err']:.3g} at {bad[0]['dims']})"
        )
    return summary


class Exportable(Protocol):
    """What an export reads: difftrt's ``Checkpoint``, or a diffusers folder's ``ImportedPipeline``."""

    config: ModelConfig
    tokenizer: Any  # with save(folder) and config()
    scheduler_config: dict
    default_min_size: int | None  # smallest image side the ranges start at (None: the model's factor)

    def component_modules(self) -> dict[str, torch.nn.Module]: ...


def export_checkpoint(ckpt: Exportable, out: Path, *, overwrite: bool = False, tol: Tolerance | None = None,
                      source: str | None = None, max_batch: int = DEFAULT_MAX_BATCH, max_size: int | None = None,
                      min_size: int | None = None,
                      precision: Mapping[str, Precision] | None = None,
                      tolerance: Callable[[str, Precision], Tolerance] = default_tolerance,
                      external_data: bool = False, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Export, validate and write ``out`` atomically; returns the manifest. Nothing is left behind on failure.

    ``precision`` per component (default fp32); every component is validated against the fp32 torch model,
    with ``tol`` for all components if given, else ``tolerance(component, precision)``. ``max_size``: the
    largest image side (pixels) the ranges cover, ``min_size`` the smallest (default: the model's own);
    ``external_data``: weights beside every graph, not only where protobuf's 2 GiB limit forces it."""
    sizes = {"max_size": max_size, "min_size": ckpt.default_min_size if min_size is None else min_size}
    specs = component_specs(ckpt.config, max_batch=max_batch, precision=precision, **sizes)
    reference_specs = component_specs(ckpt.config, max_batch=max_batch, **sizes)
    modules = ckpt.component_modules()
    components, export_warnings = {}, {}
    with atomic_dir(Path(out), overwrite) as tmp:
        for name, spec in specs.items():
            progress(f"exporting {name}")
            path = tmp / component_file(name)
            export_warnings[name] = _export_one(at_precision(modules[name], spec.precision), spec, path, external_data)
            for w in export_warnings[name]:
                if not w["benign"]:
                    progress(f"warning: {name} export: {w['category']}: {w['message']} ({w['source']})")
            engine = OrtEngine(path, spec)
            cases = validation_cases(spec)
            progress(f"validating {name} ({spec.precision.value}) at {len(cases)} sizes")
            reference = TorchEngine(modules[name], reference_specs[name])
            validation = compare(engine, reference, spec, cases, tol or tolerance(name, spec.precision))
            data = path.parent / DATA_FILE
            components[name] = {"file": component_file(name), **spec.to_json(), "validation": validation,
                                "external_data": f"{name}/{DATA_FILE}" if data.exists() else None}
        ckpt.tokenizer.save(tmp / "tokenizer")
        manifest = {"source_checkpoint": source, "opset": OPSET, "exporter": "torch.onnx (TorchScript)",
                    "model_config": model_config_to_dict(ckpt.config),
                    "scheduler_config": ckpt.scheduler_config, "tokenizer": ckpt.tokenizer.config(),
                    "components": components, "export_warnings": export_warnings}
        return write_manifest(tmp, manifest)
