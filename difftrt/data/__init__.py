"""Training data: the procedural shapes dataset (``shapes``) and user image folders (``folder``).

Both offer ``batch(start, count) -> (images (N, H, W, 3) uint8, captions, scenes)``; scenes are ``None`` for folders.
"""

from difftrt.data.folder import ImageFolderDataset
from difftrt.data.shapes import (COLORS, PALETTE, POSITIONS, SHAPES, SIZES, Scene, ShapeObject, ShapesDataset,
                                 caption, eval_prompt, eval_prompts, render, sample_scene)

__all__ = [
    "COLORS",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "ImageFolderDataset",
    "Scene",
    "ShapeObject",
    "ShapesDataset",
    "caption",
    "eval_prompt",
    "eval_prompts",
    "render",
    "sample_scene",
]
