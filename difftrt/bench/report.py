"""Plain-text and Markdown tables of bench results (TensorRT demo style: one row per stage)."""

from __future__ import annotations

from typing import Any

from difftrt.bench.e2e import STAGES

LABELS = {"text_encoder": "Text encoder", "unet": "U-Net x {steps}", "unet_call": "  U-Net (one call)",
          "vae_decoder": "VAE decoder", "scheduler": "Scheduler x {steps}", "total": "Pipeline total"}


def table(result: dict[str, Any], markdown: bool = False) -> str:
    """Rows: stage | backend median [p10–p90] ms ... | ratio column when a reference backend ran."""
    backends = list(result["backends"])
    steps = result["request"]["steps"]
    head = ["Stage"] + [f"{b} median ms [p10-p90]" for b in backends]
    if "ratio" in result:
        head.append(result["ratio"]["label"])
    rows = []
    for stage in STAGES:
        row = [LABELS[stage].format(steps=steps)]
        for b in backends:
            s = result["backends"][b]["stages"][stage]
            row.append(f"{s['median_ms']:.2f} [{s['p10_ms']:.2f}-{s['p90_ms']:.2f}]")
        if "ratio" in result:
            row.append(f"{result['ratio']['stages'][stage]:.2f}x")
        rows.append(row)
    pad = [""] if "ratio" in result else []
    rows.append(["Images/s"] + [f"{result['backends'][b]['stages']['images_per_s']:.2f}" for b in backends] + pad)
    rows.append(["Peak RSS MiB (process)"] + [f"{result['backends'][b]['peak_rss_mib_after']:.0f}" for b in backends] + pad)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
