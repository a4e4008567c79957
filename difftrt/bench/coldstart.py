"""Cold start: process start to PNG, in fresh processes, and each process's own peak memory.

The difftrt path runs the real entry point (``python -m difftrt sample ...``); the torch path runs the same
model in torch eager through the same pipeline (``python -m difftrt.bench.coldstart REPORT --torch ...``).
Each child writes its peak RSS and whether torch was imported to a report file as it exits; the parent
times the whole process, interpreter start included.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from difftrt.bench.timing import stats


def _torch_sample(ckpt: str, steps: int, guidance: float, threads: int, out: Path, prompt: str) -> None:
    """The model in torch eager fp32 through the same pipeline: what a user without difftrt's export would run."""
    from difftrt import default_model
    from difftrt.backends.torch_ref import torch_engines
    from difftrt.images import save_png
    from difftrt.exporter.sources import load_source
    from difftrt.pipeline import SampleRequest, Text2ImagePipeline
    from difftrt.schedulers import from_config

    import torch

    torch.set_num_threads(threads)
    ckpt_obj = default_model.load_checkpoint() if ckpt == "default" else load_source(Path(ckpt), available=None)
    pipe = Text2ImagePipeline(torch_engines(ckpt_obj), ckpt_obj.tokenizer, ckpt_obj.config)
    request = SampleRequest(prompt, steps=steps, guidance=guidance)
    save_png(pipe(request, from_config(ckpt_obj.scheduler_config)).images, out)


def report_at_exit(report: Path) -> None:
    """At interpreter exit, write this process's peak RSS and whether torch was imported to ``report``."""
    import atexit

    atexit.register(lambda: Path(report).write_text(json.dumps(
        {"peak_rss_mib": own_peak_rss_mib(), "torch_imported": "torch" in sys.modules}), encoding="utf-8"))


def cli_child(report: Path, args: list[str]) -> list[str]:
    """The command line of a fresh ``python -m difftrt ARGS`` that reports at exit."""
    code = ("import runpy, sys; from difftrt.bench.coldstart import report_at_exit; "
            f"report_at_exit({str(report)!r}); sys.argv = ['difftrt', *{args!r}]; "
            "runpy.run_module('difftrt', run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", code]


def torch_child(report: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "difftrt.bench.coldstart", str(report), *args]


def own_peak_rss_mib() -> float:
    """This process's peak RSS since its exec: Linux's VmHWM (``ru_maxrss`` would carry the forking parent's
    peak over the exec), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(name: str, command: Any, args: list[str], folder: Path, i: int) -> tuple[float, dict[str, Any] | str]:
    """One fresh process of ``command(report, args)``: (wall seconds, its report) or (seconds, why it failed)."""
    report = folder / f"{name.replace(' ', '_')}-{i}.json"
    start = time.perf_counter()
    done = subprocess.run(command(report, args), capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not report.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return seconds, f"exit {done.returncode}: {last[:300]}"
    return seconds, json.loads(report.read_text())


def measure(paths: list[tuple[str, Any, list[str]]], runs: int, folder: Path) -> list[dict[str, Any]]:
    """``runs`` fresh processes of each (name, command, args), the paths alternating run by run: wall time
    (median, p10-p90, min-max), the largest peak RSS, whether torch was imported."""
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in paths}
    failed: dict[str, str] = {}
    for i in range(runs):
        for name, command, args in paths:
            if name not in failed:
                took, report = run_once(name, command, args, folder, i)
                if isinstance(report, str):
                    failed[name] = report
                else:
                    seconds[name].append(took)
                    reports[name].append(report)
    return [{"name": name, "ran": False, "reason": failed[name]} if name in failed else
            {"name": name, "ran": True, "runs": runs, "seconds_stats": stats(seconds[name]),
             "peak_rss_mib": max(r["peak_rss_mib"] for r in reports[name]),
             "torch_imported": reports[name][0]["torch_imported"]} for name, _, _ in paths]


def cold_starts(engine: Path, torch_source: str | None, steps: int, guidance: float, prompt: str, threads: int,
                runs: int, folder: Path) -> dict[str, Any]:
    """difftrt sample (torch-free) against the same model in torch, same request and threads; the diffusers row
    waits for an SD folder."""
    paths = [("difftrt sample (onnxruntime)", cli_child,
              ["sample", "--engine", str(engine), "--steps", str(steps), "--guidance", str(guidance), "--threads",
               str(threads), "--prompt", prompt, "--out", str(folder / "ort.png"), "-q"])]
    if torch_source is not None:
        paths.append(("torch eager fp32", torch_child, ["--torch", torch_source, str(steps), str(guidance),
                                                        str(threads), str(folder / "torch.png"), prompt]))
    rows = measure(paths, runs, folder)
    if torch_source is None:
        rows.append({"name": "torch eager fp32", "ran": False, "reason": "torch is not installed"})
    rows.append({"name": "diffusers pipeline", "ran": False,
                 "reason": "the model is not a diffusers Stable Diffusion folder (difftrt's own format)"})
    return {"steps": steps, "runs": runs, "rows": rows}


if __name__ == "__main__":  # the torch child: REPORT --torch CKPT|default STEPS GUIDANCE THREADS OUT.png PROMPT
    report_at_exit(Path(sys.argv[1]))
    _torch_sample(sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), Path(sys.argv[7]), sys.argv[8])
