"""Plain-text and Markdown tables of a ``difftrt bench`` record: one row per backend (speed, ratios, fidelity,
roofline), then the per-stage table in TensorRT demo style, then cold start, memory and sweeps."""

from __future__ import annotations

from typing import Any

from difftrt.bench.e2e import STAGES

LABELS = {"text_encoder": "Text encoder", "unet": "U-Net x {steps}", "unet_call": "  U-Net (one call)",
          "vae_decoder": "VAE decoder", "scheduler": "Scheduler x {steps}", "total": "Pipeline total"}


def _ms(s: dict[str, Any]) -> str:
    return f"{s['median_ms']:.2f} [{s['p10_ms']:.2f}-{s['p90_ms']:.2f}]"


def _ratio(p: dict[str, float] | None) -> str:
    """A paired ratio: the median of the per-round ratios and their p10-p90."""
    return "—" if p is None else f"{p['median']:.2f}x [{p['p10']:.2f}-{p['p90']:.2f}]"


def _grid(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def backends_table(result: dict[str, Any], markdown: bool = False) -> str:
    head = ["Backend", "Total ms median [p10-p90]", "U-Net call ms", "Images/s", "x ref [p10-p90]",
            "x strongest torch [p10-p90]",
            "max |dz| vs ref", "PSNR dB vs ref", "U-Net GFLOP/s", "of peak", "Threads"]
    h = result["headline"]
    rows = []
    for r in result["rows"]:
        if not r["ran"]:
            continue
        fid, roof = r.get("fidelity"), r.get("roofline", {})
        frac = roof.get("fraction_of_peak")
        vs_ref, vs_strong = h["paired_vs_reference"].get(r["name"]), h["paired_vs_strongest_torch"].get(r["name"])
        rows.append([r["name"], _ms(r["stages"]["total"]), f"{r['stages']['unet_call']['median_ms']:.2f}",
                     f"{r['images_per_s']:.2f}", _ratio(vs_ref), _ratio(vs_strong),
                     "reference" if fid is None else f"{fid['max_abs_latents_vs_reference']:.1e}",
                     "reference" if fid is None else f"{fid['psnr_db_vs_reference']:.1f}",
                     f"{roof['unet_call_gflops']:.1f}" if roof else "—",
                     f"{frac:.1%} ({roof['peak_dtype']})" if frac is not None else "—",
                     str((r.get("threads") or {}).get("intra_op", "—"))])
    not_run = [f"{'- ' if markdown else ''}not run: {r['name']}: {r['reason']}" for r in result["rows"] if not r["ran"]]
    return "\n".join([_grid(head, rows, markdown), *(("", *not_run) if not_run else ())])


def stages_table(result: dict[str, Any], markdown: bool = False) -> str:
    ran = [r for r in result["rows"] if r["ran"]]
    steps = result["request"]["steps"]
    head = ["Stage"] + [f"{r['name']} ms" for r in ran]
    rows = [[LABELS[s].format(steps=steps)] + [_ms(r["stages"][s]) for r in ran] for s in STAGES]
    rows.append(["U-Net steps/s"] + [f"{r['unet_steps_per_s']:.1f}" for r in ran])
    return _grid(head, rows, markdown)


def summary_lines(result: dict[str, Any]) -> list[str]:
    h, roof, m = result["headline"], result["roofline"], result["machine"]
    flags = ", ".join(f for f, on in m.get("cpu_flags", {}).items() if on) or "none of the listed"
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'} (every figure is a CPU figure "
             "unless a row says otherwise); CPU features: " + flags,
             "Threads: " + ", ".join(f"{k} {v['intra_op']}" for k, v in result["threads"].items() if v),
             f"Reference: {h['reference']}; strongest torch here: {h['strongest_torch'] or 'none ran'}; ratios are "
             "paired: the median (p10-p90) of each round's reference total over the row's (> 1: the row is faster)"]
    flops = roof.get("unet_call", {})
    if "total" in flops:
        peak = roof.get("peak", {})
        peaks = "; ".join(f"{d} {p['best_gflops']:.1f} GFLOP/s (best of {p['runs']}, n={p['n']})"
                          for d, p in peak.items() if isinstance(p, dict) and "best_gflops" in p)
        lines.append(f"One U-Net call: {flops['total'] / 1e9:.3f} GFLOP (convolutions and matmuls, from the ONNX graph "
                     f"at {flops['input_shapes']}); matmul peak measured now: {peaks or 'not measured'}; 'of peak' "
                     "is a row's GFLOP/s at its median U-Net call over that best GEMM")
    for r in result["rows"]:
        if r.get("prompt_fidelity"):
            acc = r["prompt_fidelity"]["accuracy"]
            lines.append(f"Prompt fidelity ({r['prompt_fidelity']['prompts']} prompts), {r['name']}: "
                         + ", ".join(f"{k} {v:.1%}" for k, v in acc.items()))
    return lines


def extra_tables(result: dict[str, Any], markdown: bool) -> list[str]:
    out = []
    cold = result.get("cold_start")
    if cold:
        span = lambda s: f"{s['median_ms']:.0f} [{s['min_ms']:.0f}-{s['max_ms']:.0f}]"  # noqa: E731 (few runs)
        rows = [[c["name"], span(c["seconds_stats"]), f"{c['peak_rss_mib']:.0f}" if c.get("peak_rss_mib") else "—",
                 str(c.get("torch_imported", "—"))] if c.get("ran") else [c["name"], f"not run: {c['reason']}", "", ""]
                for c in cold["rows"]]
        out += ["", f"Cold start (fresh processes, process start to PNG, the paths alternating; the page cache is "
                    f"warm: the bench has read the files) and each process's own peak memory, {cold['runs']} runs:", "",
                _grid(["Path", "ms median [min-max]", "Peak RSS MiB", "torch imported"], rows, markdown)]
    sweeps = result.get("sweeps")
    if sweeps:
        names = sweeps["backends"]
        rows = [[p["axis"], str(p["value"])] + [_ms(p["total"][n]) if n in p["total"] else "—" for n in names]
                for p in sweeps["points"]]
        out += ["", f"Sweeps (total ms, {sweeps['runs']} runs per point, round-robin):", "",
                _grid(["Axis", "Value"] + names, rows, markdown)]
    return out


def format_record(result: dict[str, Any], markdown: bool = False) -> str:
    parts = summary_lines(result) + ["", backends_table(result, markdown), "", stages_table(result, markdown)]
    parts += extra_tables(result, markdown)
    if markdown:
        parts = [f"Command: `{result['command']}` (commit {result.get('commit') or 'unknown'}, {result['date_utc']})", ""] + parts
    return "\n".join(parts)
