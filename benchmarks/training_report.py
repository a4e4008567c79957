"""Write a training run's loss curves (PNG) and a Markdown summary from its trainer.json files.

    python benchmarks/training_report.py runs/shapes64 --out benchmarks/results/training-shapes64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def smooth(values: np.ndarray, k: int = 20) -> np.ndarray:
    k = max(1, min(k, len(values)))
    return np.convolve(values, np.ones(k) / k, mode="valid")


def plot(steps: np.ndarray, loss: np.ndarray, title: str, size: tuple[int, int] = (480, 240)) -> Image.Image:
    """log10(loss) against step, raw in grey and smoothed in blue, on a plain canvas."""
    w, h, pad = size[0], size[1], 36
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    y = np.log10(np.maximum(loss, 1e-8))
    lo, hi = float(y.min()), float(y.max()) + 1e-9
    to_xy = lambda s, v: (pad + (w - 2 * pad) * (s - steps[0]) / max(steps[-1] - steps[0], 1),  # noqa: E731
                          h - pad - (h - 2 * pad) * (v - lo) / (hi - lo))
    draw.line([to_xy(s, v) for s, v in zip(steps, y)], fill=(190, 190, 190))
    sm = smooth(y)
    draw.line([to_xy(s, v) for s, v in zip(steps[len(steps) - len(sm):], sm)], fill=(30, 60, 220), width=2)
    draw.rectangle([pad, pad, w - pad, h - pad], outline="black")
    draw.text((pad, 8), f"{title}: log10 loss {10 ** lo:.3g}..{10 ** hi:.3g}", fill="black")
    draw.text((pad, h - pad + 6), f"step {int(steps[0])}", fill="black")
    draw.text((w - pad - 70, h - pad + 6), f"step {int(steps[-1])}", fill="black")
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="prefix: writes PREFIX-STAGE.png and PREFIX.md")
    args = parser.parse_args()
    lines = [f"# Training run `{args.run.name}`", ""]
    for stage in ("vae", "unet"):
        meta_path = args.run / stage / "trainer.json"
        if not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        rows = np.asarray(meta["losses"], dtype=np.float64)
        plot(rows[:, 0], rows[:, 1], stage).save(f"{args.out}-{stage}.png")
        cfg = meta["train_config"]
        lines += [f"## {stage}", "",
                  f"- steps: {meta['step']} (batch {cfg['batch_size']}, lr {cfg['lr']}, seed {cfg['seed']})",
                  f"- wall time on this machine: {meta['wall_seconds'] / 60:.1f} min",
                  f"- loss: first logged {rows[0, 1]:.4f}, last 20 logged (mean) {rows[-20:, 1].mean():.4f}",
                  f"- curve: `{Path(f'{args.out}-{stage}.png').name}`", ""]
        if "scaling_factor" in meta:
            lines.insert(-1, f"- latent scaling_factor (1 / std of the VAE latents): {meta['scaling_factor']}")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
