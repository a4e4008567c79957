"""PNG output: single images or a grid, written atomically and byte-for-byte reproducibly."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from difftrt.errors import ArtifactError
from difftrt.fileio import write_bytes_atomic


def grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows·H, cols·W, 3) image, row-major, black where the grid is short."""
    n, h, w, c = images.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        out[r * h:(r + 1) * h, k * w:(k + 1) * w] = image
    return out


def png_bytes(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """PNG of one (H, W, 3) image; ``text``: tEXt chunks (key -> value), e.g. the parameters that made it."""
    from PIL.PngImagePlugin import PngInfo

    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def images_png(images: np.ndarray, text: dict[str, str] | None = None, columns: int | None = None) -> bytes:
    """One image as is; several as a grid; ``text`` as for ``png_bytes``."""
    return png_bytes(images[0] if len(images) == 1 else grid(images, columns), text)


def png_text(path: Path) -> dict[str, str] | None:
    """The tEXt chunks of a PNG, or None when it cannot be read (absent, truncated, not a PNG)."""
    try:
        with Image.open(path) as img:
            img.load()
            return dict(getattr(img, "text", {}) or {})
    except (OSError, ValueError, SyntaxError):
        return None


def save_png(images: np.ndarray, path: Path, columns: int | None = None) -> None:
    """One image as is; several as a grid."""
    write_bytes_atomic(Path(path), images_png(images, columns=columns))


def load_image(path: Path, width: int, height: int) -> np.ndarray:
    """Read any Pillow-readable image as (height, width, 3) uint8 RGB, resized (Lanczos) when needed."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ArtifactError(f"cannot read image {path}: {exc}") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)
