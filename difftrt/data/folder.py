"""User image folders as a captioned dataset, with the same ``batch(start, count)`` API as ``ShapesDataset``.

Captions come from ``captions.jsonl`` in the folder (one ``{"file": "a.png", "caption": "..."}`` per line;
blank lines skipped) and, for images it does not list, from a ``.txt`` of the same stem beside the image.
Every image is centre-cropped to a square and resized (Lanczos) to ``size``: folders of mixed sizes and aspect
ratios are accepted rather than refused, since the model trains on one square size anyway.
Problems (missing folder, no images, unreadable image, image without caption, bad captions.jsonl line) are
found up front and raised as one-line ``ArtifactError``s naming the culprit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from difftrt.errors import ArtifactError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
CAPTIONS_FILE = "captions.jsonl"


def read_captions_jsonl(path: Path) -> dict[str, str]:
    """file name -> caption from a captions.jsonl; malformed lines are an ArtifactError naming the line."""
    captions: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path} line {number}: not valid JSON ({exc.msg}); expected "
                                '{"file": "a.png", "caption": "..."}') from None
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("caption"), str)):
            raise ArtifactError(f'{path} line {number}: expected an object with string "file" and "caption", '
                                f"got {line.strip()[:80]}")
        captions[entry["file"]] = entry["caption"]
    return captions


def center_crop_resize(img: Image.Image, size: int) -> np.ndarray:
    """Centre-crop a Pillow image to a square and resize it to (size, size, 3) uint8 RGB."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = img.convert("RGB").crop((left, top, left + side, top + side))
    if side != size:
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def load_image(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return center_crop_resize(img, size)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ArtifactError(f"cannot read image {path}: {exc}") from None


def check_image(path: Path) -> None:
    """Parse the header and verify what Pillow can without decoding: a non-image is refused before training."""
    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ArtifactError(f"cannot read image {path}: {exc}") from None


def caption_for(image: Path, listed: dict[str, str]) -> str:
    """The image's caption: its captions.jsonl entry, else its .txt sidecar; absent or empty is an error."""
    text = listed.get(image.name)
    if text is None:
        sidecar = image.with_suffix(".txt")
        try:
            text = sidecar.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ArtifactError(f"image {image.name} has no caption: add it to {CAPTIONS_FILE} "
                                f"or write {sidecar.name} beside it") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"cannot read caption {sidecar}: {exc}") from None
    if not text.strip():
        raise ArtifactError(f"image {image.name} has an empty caption")
    return " ".join(text.split())


class ImageFolderDataset:
    """Images of a folder with their captions; ``batch`` indices wrap around (index i is image i mod len)."""

    def __init__(self, folder: Path, size: int) -> None:
        folder = Path(folder)
        if size < 8:
            raise UsageError(f"image size must be >= 8 pixels, got {size}")
        if not folder.is_dir():
            raise ArtifactError(f"image folder {folder} does not exist (or is not a folder)")
        self.folder, self.size = folder, size
        self.paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ArtifactError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
        listed = read_captions_jsonl(folder / CAPTIONS_FILE) if (folder / CAPTIONS_FILE).exists() else {}
        names = {p.name for p in self.paths}
        missing = sorted(set(listed) - names)
        if missing:
            raise ArtifactError(f"{folder / CAPTIONS_FILE} lists {missing[0]}, which is not an image in {folder}")
        self.captions = [caption_for(p, listed) for p in self.paths]
        for path in self.paths:
            check_image(path)

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, start: int, count: int) -> tuple[np.ndarray, list[str], list[None]]:
        """Images (count, size, size, 3) uint8 of indices start..start+count-1 (mod len), captions, [None]*count."""
        if start < 0 or count < 0:
            raise UsageError(f"start and count must be >= 0, got start={start} count={count}")
        indices = [i % len(self.paths) for i in range(start, start + count)]
        images = [load_image(self.paths[i], self.size) for i in indices]
        stacked = np.stack(images) if images else np.zeros((0, self.size, self.size, 3), np.uint8)
        return stacked, [self.captions[i] for i in indices], [None] * count
