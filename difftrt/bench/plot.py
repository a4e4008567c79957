"""``difftrt bench --plot FILE.png``: per-stage latency by backend, and the sweep curves (matplotlib, the
optional ``[plot]`` extra; nothing is imported unless a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difftrt.errors import DependencyError

STACKED = ("text_encoder", "unet", "scheduler", "vae_decoder")


def plot_record(result: dict[str, Any], path: Path) -> None:
    """Write ``path`` (PNG, atomically): stacked per-stage medians per backend; one panel per sweep axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise DependencyError("--plot needs matplotlib: pip install 'difftrt[plot]'") from None
    from difftrt.fileio import write_bytes_atomic

    ran = [r for r in result["rows"] if r["ran"]]
    sweeps = result.get("sweeps") or {}
    axes_names = sorted({p["axis"] for p in sweeps.get("points", [])})
    fig, axes = plt.subplots(1, 1 + len(axes_names), figsize=(6 + 4 * len(axes_names), 4.5), squeeze=False)
    ax = axes[0][0]
    left = [0.0] * len(ran)
    for stage in STACKED:
        widths = [r["stages"][stage]["median_ms"] for r in ran]
        ax.barh([r["name"] for r in ran], widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("median ms per image set (stages stacked)")
    ax.set_title(f"{result['request']['steps']} steps, {result['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=8)
    ax.invert_yaxis()
    for ax, axis in zip(axes[0][1:], axes_names):
        for name in sweeps["backends"]:
            points = [p for p in sweeps["points"] if p["axis"] == axis and name in p["total"]]  # failed points left out
            ax.errorbar([p["value"] for p in points], [p["total"][name]["median_ms"] for p in points],
                        yerr=[[p["total"][name]["median_ms"] - p["total"][name]["p10_ms"] for p in points],
                              [p["total"][name]["p90_ms"] - p["total"][name]["median_ms"] for p in points]],
                        marker="o", capsize=3, label=name)
        ax.set_xlabel(axis)
        ax.set_ylabel("total ms (median, p10-p90)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
