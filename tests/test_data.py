"""Procedural shapes dataset and image-folder loader: determinism, captions that match the pixels, vocabulary
coverage, folder loading and its errors. Oracles here are independent of the grammar tables: English word
lists, pixel colours, grid arithmetic and polygon areas."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from difftrt.data import ImageFolderDataset, ShapesDataset, eval_prompts, render, sample_scene
from difftrt.data.shapes import EVAL_OFFSET, PALETTE, UNIT_POLYGONS, Scene, ShapeObject
from difftrt.errors import ArtifactError, UsageError
from difftrt.models.tokenizer import Tokenizer

SHAPE_WORDS = {"circle", "square", "triangle", "diamond", "star", "cross"}
COLOR_WORDS = {"red", "green", "blue", "yellow", "orange", "purple", "white", "black"}


def parse(caption: str) -> dict[str, str | None]:
    """Read a single-object caption back with plain English rules (the test's own oracle)."""
    words = caption.replace(",", " ").split()
    bg = words[words.index("background") - 1] if "background" in words else None
    colors = [w for w in words if w in COLOR_WORDS]
    if bg is not None:
        colors.remove(bg)
    vertical = "top" if {"top", "upper"} & set(words) else "bottom" if {"bottom", "lower"} & set(words) else ""
    horizontal = "left" if "left" in words else "right" if "right" in words else ""
    size = "large" if {"large", "big"} & set(words) else "small" if "small" in words else None
    return {"shape": next(w for w in words if w in SHAPE_WORDS), "color": colors[0], "background": bg,
            "position": f"{vertical} {horizontal}".strip() or "center", "size": size}


def grid_cell(x: float, y: float) -> str:
    row, col = min(int(3 * y), 2), min(int(3 * x), 2)
    return [["top left", "top", "top right"], ["left", "center", "right"],
            ["bottom left", "bottom", "bottom right"]][row][col]


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(float((x * np.roll(y, -1) - np.roll(x, -1) * y).sum())) / 2


def test_batches_are_deterministic_whatever_the_boundaries():
    a_images, a_captions, a_scenes = ShapesDataset(seed=3).batch(5, 12)
    pieces = [ShapesDataset(seed=3).batch(5 + s, n) for s, n in ((0, 4), (4, 1), (5, 7))]
    assert np.array_equal(a_images, np.concatenate([p[0] for p in pieces]))
    assert a_captions == sum((p[1] for p in pieces), [])
    assert a_scenes == sum((p[2] for p in pieces), [])
    assert a_images.shape == (12, 64, 64, 3) and a_images.dtype == np.uint8


def test_different_seeds_differ():
    a, b = ShapesDataset(seed=0).batch(0, 8), ShapesDataset(seed=1).batch(0, 8)
    assert not np.array_equal(a[0], b[0])
    assert a[1] != b[1]


def test_captions_match_the_rendered_pixels():
    images, captions, scenes = ShapesDataset(seed=11).batch(0, 400)
    for image, text, scene in zip(images, captions, scenes):
        obj, said = scene.objects[0], parse(text)
        assert (said["shape"], said["color"]) == (obj.shape, obj.color), text
        assert said["position"] == obj.position == grid_cell(obj.cx, obj.cy), text
        assert said["background"] in (None, scene.background), text
        assert said["size"] in (None, obj.size), text
        centre = image[int(obj.cy * 64), int(obj.cx * 64)]
        corner = image[-1 if obj.cy < 0.5 else 0, -1 if obj.cx < 0.5 else 0]  # the corner farthest away
        assert tuple(centre) == PALETTE[obj.color], text
        assert tuple(corner) == PALETTE[scene.background], text


def test_background_and_size_are_mentioned_most_of_the_time():
    captions = ShapesDataset(seed=2).batch(0, 2000)[1]
    with_bg = np.mean(["background" in c for c in captions])
    with_size = np.mean([bool({"small", "large", "big"} & set(c.replace(",", " ").split())) for c in captions])
    assert 0.8 < with_bg < 0.9 and 0.55 < with_size < 0.65
    assert len({c.split()[0] for c in captions}) > 5  # varied openings, not one template


def test_sizes_separate_by_rendered_extent():
    images, _, scenes = ShapesDataset(seed=4).batch(0, 300)
    extents = {"small": [], "large": []}
    for image, scene in zip(images, scenes):
        fg = np.any(image != np.array(PALETTE[scene.background], np.uint8), axis=2)
        rows, cols = np.nonzero(fg)
        extents[scene.objects[0].size].append(max(np.ptp(rows), np.ptp(cols)) + 1)
    assert max(extents["small"]) < min(extents["large"])


def test_shapes_stay_inside_the_image():
    images, _, scenes = ShapesDataset(seed=5).batch(0, 300)
    for image, scene in zip(images, scenes):
        obj = scene.objects[0]
        assert 0 <= obj.cx - obj.radius and obj.cx + obj.radius <= 1
        assert 0 <= obj.cy - obj.radius and obj.cy + obj.radius <= 1
        bg, fg = np.array(PALETTE[scene.background], float), np.array(PALETTE[obj.color], float)
        coverage = ((image - bg) @ (fg - bg) / ((fg - bg) @ (fg - bg))).sum()  # nothing clipped by the border
        expected = polygon_area(UNIT_POLYGONS[obj.shape]) * (obj.radius * 64) ** 2
        assert coverage == pytest.approx(expected, rel=0.03), obj


def test_multi_object_scenes_use_distinct_cells_and_colours():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, max_objects=3) for _ in range(300)]
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    for scene in scenes:
        cells = [o.position for o in scene.objects]
        colors = [o.color for o in scene.objects]
        assert len(set(cells)) == len(cells) and len(set(colors)) == len(colors)
        assert scene.background not in colors


@pytest.mark.slow
def test_every_caption_word_is_in_the_vocabulary():
    tokenizer = Tokenizer.default()
    single = ShapesDataset(seed=6).batch(0, 3000)[1] + [p for p, _ in eval_prompts(0, 500)]
    multi = ShapesDataset(seed=6, max_objects=3).batch(0, 1000)[1]
    for text in single + multi:
        pieces = tokenizer.split(text)
        assert all(p in tokenizer.vocab for p in pieces), text
    assert max(len(tokenizer.split(t)) for t in single) <= tokenizer.max_length - 2  # never truncated


def test_eval_prompts_name_every_attribute_and_are_held_apart():
    prompts = eval_prompts(7, 200)
    assert prompts == eval_prompts(7, 200)
    for prompt, scene in prompts:
        obj = scene.objects[0]
        assert parse(prompt) == {"shape": obj.shape, "color": obj.color, "background": scene.background,
                                 "position": obj.position, "size": obj.size}, prompt
    assert prompts[0][1] not in ShapesDataset(seed=7).batch(0, 200)[2]
    with pytest.raises(UsageError):
        ShapesDataset(seed=7).batch(EVAL_OFFSET - 1, 2)


def test_render_is_resolution_independent():
    scene = Scene((ShapeObject("square", "red", "center", "large", 0.5, 0.5, 0.25),), "blue")
    image = render(scene, size=32)
    assert image.shape == (32, 32, 3)
    assert (image[8:24, 8:24] == PALETTE["red"]).all() and (image[:7] == PALETTE["blue"]).all()


# ---- image folders ----------------------------------------------------------------------------------------

def save(path, size, color=(200, 20, 30)):
    Image.new("RGB", size, color).save(path)


def test_folder_reads_both_caption_styles_and_resizes_mixed_sizes(tmp_path):
    save(tmp_path / "a.png", (64, 64))
    save(tmp_path / "b.jpg", (100, 40))
    wide = Image.new("RGB", (60, 20), (0, 0, 255))
    wide.paste((255, 0, 0), (20, 0, 40, 20))  # only the centre square is red
    wide.save(tmp_path / "c.png")
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "a.png", "caption": "a red square"}) + "\n\n"
                                             + json.dumps({"file": "c.png", "caption": "red"}) + "\n")
    (tmp_path / "b.txt").write_text("  a red\nbox \n")
    data = ImageFolderDataset(tmp_path, 16)
    images, captions, scenes = data.batch(0, 4)  # wraps around
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert captions == ["a red square", "a red box", "red", "a red square"] and scenes == [None] * 4
    assert (images[2] == (255, 0, 0)).all()  # centre-cropped, not squashed
    assert len(data) == 3


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no images"),
    (lambda d: (save(d / "a.png", (8, 8)), (d / "a.txt").write_text("x"), (d / "b.png").write_bytes(b"junk"),
                (d / "b.txt").write_text("y")), "b.png"),
    (lambda d: save(d / "a.png", (8, 8)), "a.png has no caption"),
    (lambda d: (save(d / "a.png", (8, 8)),
                (d / "captions.jsonl").write_text('{"file": "a.png", "caption": "x"}\n{oops\n')), "line 2"),
    (lambda d: (save(d / "a.png", (8, 8)), (d / "captions.jsonl").write_text('{"file": "a.png"}\n')), "line 1"),
    (lambda d: (save(d / "a.png", (8, 8)), (d / "a.txt").write_text(" \n")), "empty caption"),
])
def test_folder_errors_name_the_problem(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ArtifactError, match=message) as info:
        ImageFolderDataset(tmp_path, 16)
    assert "\n" not in str(info.value)


def test_missing_folder_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", 16)
