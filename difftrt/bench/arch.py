"""``difftrt bench --arch sd15 --random-weights``: the SD-1.5 architecture at its real size, with random weights
(nothing downloaded), through the user's path: saved as a diffusers folder, exported by ``difftrt export`` in a
child process (its wall time and peak memory measured, beside the estimate the export checks first), then one
call per component timed round-robin: ONNX Runtime against torch eager fp32 and torch bf16 autocast.

Inputs are one guided 512×512 step's: the U-Net at batch 2 (the unconditional and conditional halves),
4×64×64 latents, a 2×77×768 context; the VAE decoder at one 64×64 latent (a 512×512 image); the text encoder
at one 77-token prompt (the pipeline encodes the prompt and the negative prompt by separate calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.bench.components import time_component
from difftrt.bench.peak import cpu_flags, native_bf16
from difftrt.bench.sd15 import Architecture, save_random_pipeline
from difftrt.bench.timing import peak_rss_mib
from difftrt.errors import ArtifactError, first_line

REFERENCE = "torch fp32 eager"
STAGES = ("text_encoder", "unet", "vae_decoder")


def peak_rss_of(pid: int) -> int | None:
    """A live process's peak resident memory in KiB (VmHWM, which restarts at exec), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), None)
    except (OSError, ValueError, IndexError):
        return None


def child_export(folder: Path, out: Path, size: int) -> dict[str, Any]:
    """``difftrt export`` in a child process: its wall seconds, its own peak RSS and its summary.

    The peak is the child's VmHWM, read every 0.1 s while it runs. ``wait4``'s ru_maxrss would not do: Linux
    carries the parent's high-water mark into the child across fork and exec, and this parent has just built
    the model."""
    command = [sys.executable, "-m", "difftrt", "export", "--ckpt", str(folder), "--out", str(out),
               "--max-batch", "1", "--max-size", str(size), "--quiet", "--json"]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, peak_rss_of(proc.pid) or 0)
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
    if proc.returncode:
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        last = (err_text.strip().splitlines() or ["no message (out of memory?)"])[-1][:300]
        raise ArtifactError(f"the export {how}: {last}")
    try:
        summary = json.loads(out_text)
    except ValueError:
        summary = out_text.strip()[:300]
    return {"command": " ".join(["difftrt", *command[3:]]), "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak / 1024), "peak_rss_source": "the child's VmHWM, polled every 0.1 s",
            "summary": summary}


def _feeds(spec: Any, dims: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = spec.sample_inputs(dims, seed=int(rng.integers(1 << 30)))
    if "timestep" in feeds:
        feeds["timestep"] = np.full(dims["batch"], 500.0, np.float32)  # mid-schedule
    return feeds


def run_arch_bench(arch: Architecture, cache: Path, runs: int, warmup: int, threads: int,
                   progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    import torch

    from difftrt.artifact import open_artifact
    from difftrt.backends.ort import OrtEngine
    from difftrt.backends.torch_ref import TorchEngine, TorchOptions
    from difftrt.exporter.diffusers_import import load_diffusers_folder
    from difftrt.models.diffusers_folder import available_memory, inspect_folder

    folder, export = Path(cache) / f"{arch.name}-random", Path(cache) / f"{arch.name}-random-onnx"
    record: dict[str, Any] = {"arch": arch.name, "weights": "random (seed 0), diffusers' own classes",
                              "folder": str(folder), "export": str(export)}
    if not (folder / "model_index.json").is_file():
        progress(f"writing {arch.name} with random weights to {folder}")
        start = time.perf_counter()
        save_random_pipeline(arch, folder, overwrite=True)
        record["save_seconds"] = round(time.perf_counter() - start, 1)
    inspected = inspect_folder(folder)
    record["parameters_m"] = {n: round(w.parameters / 1e6, 1) for n, w in inspected.weights.items()}
    record["export_memory_estimate_mib"] = round(inspected.export_memory(1, inspected.config.vae.sample_size) / 2**20)
    record["available_memory_mib"] = round((available_memory() or 0) / 2**20)
    size = inspected.config.vae.sample_size
    if not (export / "manifest.json").is_file():
        progress(f"exporting {folder} (a child process; its peak memory is measured)")
        record["export_run"] = child_export(folder, export, size)
    artifact = open_artifact(export, "unet")
    record["validation"] = {n: {k: c["validation"][k] for k in ("max_abs_err", "max_rel_err", "tolerance")}
                            for n, c in artifact.manifest["components"].items()}
    cores = threads or os.cpu_count() or 1
    torch.set_num_threads(cores)
    progress("loading the torch modules")
    modules = load_diffusers_folder(folder, available=None).modules  # timing only: no export-memory check
    flags = cpu_flags()
    contenders: dict[str, Callable[[str], Any]] = {
        f"onnxruntime cpu fp32 ({cores} threads)": lambda n: OrtEngine(artifact.path(n), artifact.specs[n], threads=cores),
        REFERENCE: lambda n: TorchEngine(modules[n], artifact.specs[n]),
    }
    if native_bf16(flags):
        contenders["torch bf16 autocast"] = lambda n: TorchEngine(
            modules[n], artifact.specs[n], options=TorchOptions(dtype="bfloat16", autocast=True))
    else:
        record["skipped"] = {"torch bf16 autocast": "this CPU has no native bf16 (avx512_bf16/amx_bf16): torch "
                             "emulates it about 66x slower than fp32"}
    rng = np.random.default_rng(0)
    latent = size // inspected.config.vae.downsample_factor
    dims = {"text_encoder": {"batch": 1}, "unet": {"batch": 2, "latent_height": latent, "latent_width": latent},
            "vae_decoder": {"batch": 1, "latent_height": latent, "latent_width": latent}}
    record["components"] = {}
    for stage in STAGES:
        progress(f"timing {stage}")
        engines = {}
        for label, make in contenders.items():
            try:
                engines[label] = make(stage)
            except Exception as exc:  # a backend that cannot load the component becomes a row with its reason
                engines[label] = _Failed(f"{type(exc).__name__}: {first_line(exc)}")
        record["components"][stage] = time_component(engines, _feeds(artifact.specs[stage], dims[stage], rng),
                                                     REFERENCE, runs, warmup, progress)
        engines.clear()
    record["peak_rss_mib_bench"] = round(peak_rss_mib())
    record["cpu_flags"] = flags
    return record


class _Failed:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def ready(self, shapes: Any) -> None:
        raise RuntimeError(self.reason)


def format_arch_record(record: dict[str, Any], markdown: bool = False) -> str:
    """The component table (median and spread, paired speed-up, distance from the reference) and the export's
    time and memory, as text or Markdown."""
    lines = []
    if markdown:
        lines += [f"# `{record.get('command', 'difftrt bench')}`", "",
                  f"{record['date_utc']} · {record['machine']['cpu']}, {record['machine']['cores']} cores, no GPU · "
                  + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), ""]
    run = record.get("export_run")
    if run:
        lines.append(f"export: {run['seconds']:.0f} s, peak RSS {run['peak_rss_mib']} MiB (estimate checked first: "
                     f"{record['export_memory_estimate_mib']} MiB; available {record['available_memory_mib']} MiB)")
    lines.append("parameters (M): " + ", ".join(f"{k} {v}" for k, v in record["parameters_m"].items()))
    lines.append("validation vs torch fp32: " + ", ".join(
        f"{k} {v['max_abs_err']:.1e} abs / {v['max_rel_err']:.1e} rel" for k, v in record["validation"].items()))
    lines.append("")
    head = ["component", "inputs", "backend", "median ms", "p10-p90 ms", f"speed-up vs {REFERENCE} (median [min-max])",
            "max abs diff vs reference"]
    rows = []
    for stage, result in record["components"].items():
        inputs = " ".join("x".join(map(str, shape)) for shape in result["inputs"].values())
        for label, row in result["rows"].items():
            if "error" in row:
                rows.append([stage, inputs, label, row["error"], "", "", ""])
                continue
            ratio = row.get("speedup_vs_reference")
            rows.append([stage, inputs, label, f"{row['median_ms']:.0f}", f"{row['p10_ms']:.0f}-{row['p90_ms']:.0f}",
                         f"{ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}]" if ratio else "",
                         f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else ""])
    if markdown:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [head, *rows]]
    for label, reason in record.get("skipped", {}).items():
        lines.append(f"skipped {label}: {reason}")
    return "\n".join(lines)
