"""Procedural captioned dataset: one (or a few) flat-coloured shapes on a flat background, 3×3 grid positions.

Every attribute a caption can name is a module constant (``SHAPES``, ``COLORS``, ``POSITIONS``, ``SIZES``), so
``difftrt.evaluate`` can read the same attributes back from an image and score a model's prompt fidelity.

Geometry: ``ShapeObject.cx, cy, radius`` are fractions of the image side, so a scene renders at any size.
``radius`` is the half-extent: every shape fills the axis-aligned box ``[cx ± radius] × [cy ± radius]``
(the unit polygons below are normalised to ``[-1, 1]²``), which keeps "inside the image" and the size
read-back identical for all shapes. Rendering is anti-aliased by per-pixel coverage (``shape_alpha``).

Sample ``i`` of seed ``s`` draws from ``default_rng([s, i])``; evaluation prompts from
``default_rng([s, EVAL_OFFSET + i])``, a stream training never reaches (``ShapesDataset`` refuses indices
≥ ``EVAL_OFFSET``). Two-object captions can run past the default 14-token budget and get truncated; single-object
captions and evaluation prompts never do (tests/test_data.py checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from difftrt.errors import UsageError

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
PALETTE = {  # name -> RGB; pairwise distances ≥ 115 so blurry model outputs still map to the right name
    "red": (200, 20, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 235, 50),
    "orange": (255, 130, 0),
    "purple": (150, 30, 170),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLORS = tuple(PALETTE)
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
SIZES = ("small", "large")
SIZE_RADIUS = {"small": (0.08, 0.10), "large": (0.13, 0.15)}  # half-extent range, fraction of the image side
SIZE_SPLIT = 0.23  # extent (2·radius) threshold between the two sizes: small ≤ 0.20 < 0.23 < 0.26 ≤ large
CELL_CENTERS = (1 / 6, 1 / 2, 5 / 6)  # grid cell centres, fraction of the image side
JITTER = 0.015  # ± uniform jitter of the centre; 1/6 − 0.015 − 0.15 > 0 keeps large corner shapes inside
SUPERSAMPLE = 8  # sub-scanlines per pixel row (coverage across a row is exact)
EVAL_OFFSET = 10**9  # evaluation prompts use seed stream [seed, EVAL_OFFSET + i]
P_BACKGROUND, P_SIZE = 0.85, 0.6  # how often a training caption mentions the background / the size

# Caption grammar. Synonyms appear in training captions only; eval_prompt() uses the first (canonical) phrase.
SIZE_WORDS = {"small": ("small",), "large": ("large", "big")}
POSITION_PHRASES = {
    "top left": ("at the top left", "in the top left corner", "in the upper left corner"),
    "top": ("at the top", "at the top center"),
    "top right": ("at the top right", "in the top right corner", "in the upper right corner"),
    "left": ("on the left", "at the left"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("on the right", "at the right"),
    "bottom left": ("at the bottom left", "in the bottom left corner", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom center"),
    "bottom right": ("at the bottom right", "in the bottom right corner", "in the lower right corner"),
}
TEMPLATES_WITH_BACKGROUND = (  # {obj} "a large red circle", {pos} "at the top left", {bg} "white", {a_bg} "a white"
    "{obj} {pos} on {a_bg} background",
    "{obj} {pos}, {bg} background",
    "{obj} {pos} with {a_bg} background",
    "{a_bg} background with {obj} {pos}",
    "{pos}, {obj} on {a_bg} background",
)
TEMPLATES_PLAIN = ("{obj} {pos}", "{pos}, {obj}")


def _regular_star(points: int = 5, inner: float = 0.5) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _to_unit_box(points: np.ndarray) -> np.ndarray:
    """Affinely map a polygon so its bounding box is exactly [-1, 1]²."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return 2 * (points - lo) / (hi - lo) - 1


def _circle(vertices: int = 64) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


_T = 0.34  # half-thickness of the cross's arms (unit box)
UNIT_POLYGONS = {  # (K, 2) vertices (x right, y down) filling [-1, 1]²
    "circle": _circle(),
    "square": np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float),
    "triangle": np.array([(0, -1), (1, 1), (-1, 1)], dtype=float),
    "diamond": np.array([(0, -1), (1, 0), (0, 1), (-1, 0)], dtype=float),
    "star": _to_unit_box(_regular_star()),
    "cross": np.array([(-_T, -1), (_T, -1), (_T, -_T), (1, -_T), (1, _T), (_T, _T), (_T, 1), (-_T, 1),
                       (-_T, _T), (-1, _T), (-1, -_T), (-_T, -_T)], dtype=float),
}


@dataclass(frozen=True)
class ShapeObject:
    shape: str  # one of SHAPES
    color: str  # one of COLORS
    position: str  # one of POSITIONS (the 3×3 cell holding (cx, cy))
    size: str  # one of SIZES
    cx: float  # centre, fraction of the image width
    cy: float  # centre, fraction of the image height
    radius: float  # half-extent, fraction of the image side


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: str  # one of COLORS, never an object's colour


def shape_alpha(shape: str, cx: float, cy: float, rx: float, ry: float, height: int, width: int) -> np.ndarray:
    """Coverage (height, width) float32 in [0, 1] of ``shape`` filling the box [cx ± rx] × [cy ± ry] (pixels).

    Pixel (i, j) covers [j, j+1) × [i, i+1). Scanline rasteriser: ``SUPERSAMPLE`` sub-scanlines per row, each
    crossing the polygon in exact spans whose overlap with every pixel is measured analytically, so coverage is
    exact across and ``SUPERSAMPLE``-sampled down. The evaluator's templates come from here too.
    """
    points = UNIT_POLYGONS[shape] * (rx, ry) + (cx, cy)
    alpha = np.zeros((height, width), dtype=np.float32)
    (x0, y0), (x1, y1) = np.floor(points.min(axis=0)).astype(int), np.ceil(points.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return alpha
    ys = (np.arange(y0 * SUPERSAMPLE, y1 * SUPERSAMPLE) + 0.5)[:, None] / SUPERSAMPLE  # (M, 1) sub-scanlines
    (ax, ay), (bx, by) = points.T, np.roll(points, -1, axis=0).T  # edges a -> b
    crosses = (ay <= ys) != (by <= ys)  # (M, K), half-open so a vertex counts once
    t = (ys - ay) / np.where(by != ay, by - ay, 1.0)
    xs = np.sort(np.where(crosses, ax + t * (bx - ax), np.inf), axis=1)[:, : max(crosses.sum(axis=1).max(), 2)]
    starts, ends = xs[:, 0::2, None], xs[:, 1::2, None]  # (M, spans, 1), inf where a line has fewer spans
    cols = np.arange(x0, x1)
    cover = np.clip(np.minimum(ends, cols + 1) - np.maximum(starts, cols), 0, 1).sum(axis=1)  # (M, W)
    alpha[y0:y1, x0:x1] = cover.reshape(y1 - y0, SUPERSAMPLE, -1).mean(axis=1)
    return alpha


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """The scene as a (size, size, 3) uint8 RGB image, objects composited in order over the background."""
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = PALETTE[scene.background]
    for obj in scene.objects:
        r = obj.radius * size
        alpha = shape_alpha(obj.shape, obj.cx * size, obj.cy * size, r, r, size, size)[..., None]
        image += alpha * (np.asarray(PALETTE[obj.color], dtype=np.float32) - image)
    return np.round(image).astype(np.uint8)


def cell_center(position: str) -> tuple[float, float]:
    """(x, y) centre of a grid cell, fraction of the image side."""
    row, col = divmod(POSITIONS.index(position), 3)
    return CELL_CENTERS[col], CELL_CENTERS[row]


def sample_scene(rng: np.random.Generator, max_objects: int = 1) -> Scene:
    """A scene of 1..max_objects shapes in distinct cells, distinct colours, none the background's colour."""
    if not 1 <= max_objects <= len(COLORS) - 1:
        raise UsageError(f"max_objects must be in 1..{len(COLORS) - 1}, got {max_objects}")
    n = int(rng.integers(1, max_objects + 1))
    colors = rng.permutation(len(COLORS))  # [0] is the background, [1:n+1] the objects
    cells = rng.choice(len(POSITIONS), size=n, replace=False)
    objects = []
    for k in range(n):
        size = SIZES[int(rng.integers(len(SIZES)))]
        x, y = cell_center(POSITIONS[cells[k]])
        jx, jy = rng.uniform(-JITTER, JITTER, size=2)
        objects.append(ShapeObject(shape=SHAPES[int(rng.integers(len(SHAPES)))], color=COLORS[colors[k + 1]],
                                   position=POSITIONS[cells[k]], size=size, cx=float(x + jx), cy=float(y + jy),
                                   radius=float(rng.uniform(*SIZE_RADIUS[size]))))
    return Scene(tuple(objects), COLORS[colors[0]])


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(obj: ShapeObject, rng: np.random.Generator) -> str:
    words = [obj.color, obj.shape]
    if rng.random() < P_SIZE:
        words.insert(0, SIZE_WORDS[obj.size][int(rng.integers(len(SIZE_WORDS[obj.size])))])
    if rng.random() < 0.8:
        words.insert(0, article(words[0]))
    return " ".join(words)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A varied caption: always each object's shape, colour and position; usually size and background."""
    parts = [(_object_phrase(obj, rng), _pick(POSITION_PHRASES[obj.position], rng)) for obj in scene.objects]
    with_background = rng.random() < P_BACKGROUND
    if len(parts) > 1:  # several objects: "A at P and B at Q", the background appended
        text = " and ".join(f"{obj} {pos}" for obj, pos in parts)
        return text + (f", {scene.background} background" if with_background else "")
    template = _pick(TEMPLATES_WITH_BACKGROUND if with_background else TEMPLATES_PLAIN, rng)
    a_bg = f"{article(scene.background)} {scene.background}"
    return template.format(obj=parts[0][0], pos=parts[0][1], bg=scene.background, a_bg=a_bg)


def eval_prompt(scene: Scene) -> str:
    """The canonical prompt naming every attribute: "a large red circle at the top left on a white background"."""
    phrases = []
    for obj in scene.objects:
        words = f"{obj.size} {obj.color} {obj.shape}"
        phrases.append(f"{article(words)} {words} {POSITION_PHRASES[obj.position][0]}")
    return f"{' and '.join(phrases)} on {article(scene.background)} {scene.background} background"


def eval_prompts(seed: int, n: int) -> list[tuple[str, Scene]]:
    """``n`` single-object evaluation prompts with their scenes, from the held-apart stream [seed, EVAL_OFFSET + i]."""
    scenes = [sample_scene(np.random.default_rng([seed, EVAL_OFFSET + i]), 1) for i in range(n)]
    return [(eval_prompt(scene), scene) for scene in scenes]


class ShapesDataset:
    """Infinite, deterministic: sample ``i`` depends only on (seed, i), whatever the batch boundaries."""

    def __init__(self, seed: int, size: int = 64, max_objects: int = 1) -> None:
        if size < 8:
            raise UsageError(f"image size must be >= 8 pixels, got {size}")
        if not 1 <= max_objects <= len(COLORS) - 1:
            raise UsageError(f"max_objects must be in 1..{len(COLORS) - 1}, got {max_objects}")
        self.seed, self.size, self.max_objects = seed, size, max_objects

    def sample(self, index: int) -> tuple[np.ndarray, str, Scene]:
        rng = np.random.default_rng([self.seed, index])
        scene = sample_scene(rng, self.max_objects)
        return render(scene, self.size), caption(scene, rng), scene

    def batch(self, start: int, count: int) -> tuple[np.ndarray, list[str], list[Scene]]:
        """Samples start..start+count-1: images (count, size, size, 3) uint8, captions, scenes."""
        if start < 0 or count < 0 or start + count > EVAL_OFFSET:
            raise UsageError(f"dataset indices must lie in [0, {EVAL_OFFSET}), got start={start} count={count}")
        samples = [self.sample(i) for i in range(start, start + count)]
        images = np.stack([s[0] for s in samples]) if samples else np.zeros((0, self.size, self.size, 3), np.uint8)
        return images, [s[1] for s in samples], [s[2] for s in samples]
