"""The Markdown tables of a ``benchmarks/gpu_check.py`` record (every number stays in its JSON)."""

from __future__ import annotations

from typing import Any


def _ms(s: dict[str, Any] | None) -> str:
    if not s:
        return "—"
    return f"{s['median_ms']:.2f} ({s['p10_ms']:.2f}–{s['p90_ms']:.2f})"


def _device_line(env: dict[str, Any]) -> str:
    gpu = env.get("gpu")
    cpu = env["machine"]["cpu"]
    if not gpu:
        return f"**No GPU**: CPU {cpu}, {env['machine']['cores']} cores. Every figure below is a CPU figure."
    return (f"**GPU**: {gpu['name']} ({gpu['compute_capability']}, {gpu['memory_gib']} GiB; nvidia-smi: "
            f"{gpu.get('nvidia_smi', '?')}); host CPU {cpu}, {env['machine']['cores']} cores")


def _pipeline_table(section: dict[str, Any]) -> list[str]:
    req = section.get("request", {})
    lines = [f"Model: {section.get('model')}; request: {req}", "",
             "| variant | end to end ms, median (p10–p90) | images/s | U-Net steps/s | text encoder ms | U-Net guided "
             "call ms | VAE decode ms | peak GPU MiB (above what earlier rows hold) | PSNR dB vs reference | "
             "latents rel. err. | finite |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in section.get("rows", []):
        if "error" in row:
            lines.append(f"| {row['variant']} | not run: {row['error']} |" + " |" * 9)
            continue
        m = row.get("modules", {})
        psnr, rel = row.get("psnr_db_vs_reference"), row.get("latents_rel_err_vs_reference")
        peak = row.get("peak_gpu_mib")
        peak_text = "—" if peak is None else f"{peak} ({row.get('peak_gpu_mib_above_baseline')})"
        lines.append(f"| {row['variant']} | {_ms(row['end_to_end'])} | {row['images_per_s']:.2f} | "
                     f"{row['unet_steps_per_s']:.1f} | {_ms(m.get('text_encoder'))} | {_ms(m.get('unet_guided_call'))} | "
                     f"{_ms(m.get('vae_decoder'))} | "
                     f"{peak_text} | "
                     f"{'reference' if psnr is None else f'{psnr:.1f}'} | {'—' if rel is None else f'{rel:.1e}'} | "
                     f"{row['finite']} |")
    return lines


def markdown(record: dict[str, Any]) -> str:
    env, sections = record["environment"], record["sections"]
    lines = [f"# GPU check, {record['date_utc'][:10]}", "", _device_line(env), "",
             f"Commit `{record['commit']}`; command: `{record['command']}`", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), ""]
    for name in ("bundled", "sd15"):
        section = sections.get(name)
        if section is None:
            continue
        lines += [f"## {name}", ""]
        lines += [f"Not run: {section['error']}"] if "error" in section else _pipeline_table(section)
        if section.get("cpu_fp32_check"):
            c = section["cpu_fp32_check"]
            lines += ["", f"One U-Net call, CPU fp32 against this device's strict fp32: max abs difference "
                          f"{c['max_abs']:.2e} (outputs up to {c['max_abs_output']:.2f}; CPU call {c['cpu_call_s']:.1f} s"
                          f"{'; same device, so no information' if c['same_device'] else ''})"]
        lines += [""]
    loop = sections.get("scheduler")
    if loop is not None:
        lines += ["## scheduler loop on device arrays", ""]
        if "error" in loop:
            lines += [f"Not run: {loop['error']}", ""]
        else:
            lines += [f"Latents {loop['latents']}, a closed-form model (tanh) in place of the U-Net.", "",
                      "| scheduler | batch | library | loop ms, median (p10–p90) | max abs vs NumPy |", "|---|---|---|---|---|"]
            for row in loop["rows"]:
                if "error" in row:
                    lines.append(f"| {row['scheduler']} | {row['batch']} | {row['library']} | not run: {row['error']} | |")
                else:
                    lines.append(f"| {row['scheduler']} | {row['batch']} | {row['library']} | {_ms(row['loop'])} | "
                                 f"{row['max_abs_vs_numpy']:.1e} |")
            lines += [""]
    for name in ("tensorrt", "onnxruntime"):
        if name in sections:
            shown = {k: v for k, v in sections[name].items() if k != "trace"}
            lines += [f"## {name}", "", "```", *(f"{k}: {v}" for k, v in shown.items()), "```", ""]
    return "\n".join(lines) + "\n"
