"""``--save-intermediates``: the latents after every step (.npy) and a grid of decoded x0 previews."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.arrays import to_host
from difftrt.fileio import atomic_dir, check_new_folder
from difftrt.images import grid, png_bytes
from difftrt.pipeline import to_uint8


class IntermediateRecorder:
    """A step callback that keeps each step's latents and the first image's predicted x0."""

    def __init__(self) -> None:
        self.latents: list[tuple[int, float, np.ndarray]] = []
        self.pred_x0: list[np.ndarray] = []

    def __call__(self, i: int, t: float, x: Any, pred_x0: Any) -> None:
        """Keep host copies (the loop's arrays may be on a GPU)."""
        self.latents.append((i, t, np.array(to_host(x))))
        self.pred_x0.append(np.array(to_host(pred_x0[:1])))

    def write(self, folder: Path, decode: Callable[[np.ndarray], np.ndarray]) -> None:
        """Write ``step_III_tTTTT.npy`` per step (t as an integer, or with 3 decimals on a σ-grid) and
        ``x0_previews.png`` (decoded x0, one tile per step)."""
        folder = Path(folder)
        check_new_folder(folder, "--save-intermediates")
        previews = to_uint8(to_host(decode(np.concatenate(self.pred_x0))))
        with atomic_dir(folder, overwrite=folder.exists()) as tmp:  # replaces only an empty folder
            for i, t, x in self.latents:
                buffer = io.BytesIO()
                np.save(buffer, x, allow_pickle=False)
                label = f"{int(t):04d}" if float(t).is_integer() else f"{t:08.3f}"
                (tmp / f"step_{i:03d}_t{label}.npy").write_bytes(buffer.getvalue())
            (tmp / "x0_previews.png").write_bytes(png_bytes(grid(previews)))
