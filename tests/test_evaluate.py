"""The attribute analyser against ground truth (clean and degraded renders) and the evaluation bookkeeping,
driven by fake pipelines whose outputs are known."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from difftrt.data import ShapesDataset, eval_prompts, render
from difftrt.data.shapes import Scene, ShapeObject
from difftrt.errors import UsageError
from difftrt.evaluate import Attributes, agreement, analyse, evaluate, format_table

ATTRS = ("shape", "color", "position", "size", "background")


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) float blur, edges replicated (the test's own, not the analyser's)."""
    r = int(3 * sigma + 0.5)
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    k /= k.sum()
    h, w = image.shape[:2]
    p = np.pad(image, ((r, r), (0, 0), (0, 0)), mode="edge")
    image = sum(k[i] * p[i:i + h] for i in range(2 * r + 1))
    p = np.pad(image, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[:, i:i + w] for i in range(2 * r + 1))


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float = 1.0, noise: float = 10.0) -> np.ndarray:
    x = gaussian_blur(image.astype(np.float64), blur) + rng.normal(0, noise, image.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def accuracy_on(images: np.ndarray, scenes: list) -> dict[str, float]:
    hits = {k: 0 for k in ATTRS}
    for image, scene in zip(images, scenes):
        got, obj = analyse(image), scene.objects[0]
        truth = {"shape": obj.shape, "color": obj.color, "position": obj.position, "size": obj.size,
                 "background": scene.background}
        for k in ATTRS:
            hits[k] += getattr(got, k) == truth[k]
    return {k: v / len(scenes) for k, v in hits.items()}


@pytest.fixture(scope="module")
def ground_truth():
    images, _, scenes = ShapesDataset(seed=2024).batch(0, 1000)
    return images, scenes


@pytest.mark.slow
def test_analyser_reads_clean_renders(ground_truth):
    acc = accuracy_on(*ground_truth)
    assert min(acc.values()) >= 0.99, acc


@pytest.mark.slow
def test_analyser_survives_blur_and_noise(ground_truth):
    images, scenes = ground_truth
    rng = np.random.default_rng(0)
    acc = accuracy_on(np.stack([degrade(im, rng) for im in images]), scenes)
    assert min(acc.values()) >= 0.95, acc
    heavy = accuracy_on(np.stack([degrade(im, rng, blur=1.5, noise=15) for im in images[:400]]), scenes[:400])
    assert heavy["shape"] >= 0.93 and min(heavy.values()) >= 0.93, heavy  # blurrier than most model outputs


def test_analyser_works_at_other_resolutions():
    prompts = eval_prompts(3, 60)
    for size in (48, 128):
        images = np.stack([render(scene, size) for _, scene in prompts])
        acc = accuracy_on(images, [scene for _, scene in prompts])
        assert min(acc.values()) >= 0.95, (size, acc)


def test_blank_image_has_no_foreground():
    got = analyse(np.full((64, 64, 3), (30, 60, 220), dtype=np.uint8))
    assert got == Attributes(None, None, None, None, "blue")


def test_analyser_refuses_non_images():
    with pytest.raises(UsageError, match=r"\(H, W, 3\)"):
        analyse(np.zeros((64, 64), dtype=np.uint8))


def test_a_stray_speck_does_not_move_the_shape():
    scene = Scene((ShapeObject("triangle", "red", "bottom right", "small", 5 / 6, 5 / 6, 0.09),), "white")
    image = render(scene)
    image[4:7, 4:7] = (30, 60, 220)  # a blue speck at the top left
    assert analyse(image) == Attributes("triangle", "red", "bottom right", "small", "white")


# ---- evaluate / agreement / format_table --------------------------------------------------------------------

class RenderingPipeline:
    """A perfect "model": renders the ground-truth scene of each prompt; records the requests."""

    def __init__(self, prompts, blank: bool = False):
        self.scenes = dict(prompts)
        self.blank, self.requests = blank, []

    def __call__(self, request, scheduler):
        self.requests.append(request)
        image = np.zeros((64, 64, 3), np.uint8) if self.blank else render(self.scenes[request.prompt])
        return SimpleNamespace(images=image[None])


def test_evaluate_scores_a_perfect_pipeline_100_percent():
    prompts = eval_prompts(0, 24)
    pipe = RenderingPipeline(prompts)
    result = evaluate(pipe, lambda: None, prompts, steps=3, guidance=2.0, seed=40)
    assert result["accuracy"] == {"shape": 1.0, "color": 1.0, "position": 1.0, "background": 1.0, "size": 1.0,
                                  "all": 1.0}
    assert [r.seed for r in pipe.requests] == list(range(40, 64))
    assert {(r.steps, r.guidance, r.num_images) for r in pipe.requests} == {(3, 2.0, 1)}
    assert result["images"].shape == (24, 64, 64, 3)
    first = result["verdicts"][0]
    assert first["prompt"] == prompts[0][0] and first["expected"]["size"] == prompts[0][1].objects[0].size
    assert all(first["correct"].values()) and first["got"]["shape"] == prompts[0][1].objects[0].shape
    table = format_table(result)
    assert "shape" in table and "100.0%" in table and "24/24" in table


def test_evaluate_scores_a_blank_pipeline_zero():
    prompts = eval_prompts(1, 24)
    result = evaluate(RenderingPipeline(prompts, blank=True), lambda: None, prompts)
    acc = result["accuracy"]
    assert acc["shape"] == acc["color"] == acc["position"] == acc["all"] == 0.0
    black = np.mean([scene.background == "black" for _, scene in prompts])
    assert acc["background"] == pytest.approx(black)


def test_size_is_scored_only_when_the_prompt_names_it():
    scene = Scene((ShapeObject("star", "green", "center", "large", 0.5, 0.5, 0.14),), "black")
    prompts = [("a green star in the center on a black background", scene)]
    result = evaluate(RenderingPipeline(prompts), lambda: None, prompts)
    assert "size" not in result["verdicts"][0]["expected"] and "size" not in result["accuracy"]


def verdicts(*flags: tuple[bool, bool, bool, bool, bool]) -> list[dict]:
    names = ("shape", "color", "position", "background", "size")
    return [{"prompt": f"p{i}", "correct": dict(zip(names, f))} for i, f in enumerate(flags)]


def test_agreement_compares_the_four_verdicts_per_prompt():
    t, f = True, False
    a = verdicts((t, t, t, t, t), (t, f, t, t, t), (f, f, f, f, f), (t, t, t, t, f))
    b = verdicts((t, t, t, t, t), (t, t, t, t, t), (f, f, f, f, f), (t, t, t, t, t))  # size ignored
    assert agreement(a, b) == 0.75
    assert agreement(a, a) == 1.0
    with pytest.raises(UsageError, match="same prompts"):
        agreement(a, b[:3])


def test_data_and_evaluation_leave_torch_out():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import difftrt.data, difftrt.evaluate\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
