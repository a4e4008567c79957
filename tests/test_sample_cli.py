"""`difftrt sample` end to end on the tiny export: determinism, options, outputs."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from difftrt.cli import main
from difftrt.schedulers import SCHEDULERS

from .conftest import TINY


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def sample(export_dir, out, *extra: str):
    result = run("sample", "--engine", str(export_dir / "unet" / "model.onnx"), "--steps", "4", "--out", str(out), "-q", *extra)
    assert result.exit_code == 0, result.output
    return out


def test_same_seed_gives_byte_identical_png(export_dir, tmp_path):
    a = sample(export_dir, tmp_path / "a.png", "--seed", "7").read_bytes()
    b = sample(export_dir, tmp_path / "b.png", "--seed", "7").read_bytes()
    c = sample(export_dir, tmp_path / "c.png", "--seed", "8").read_bytes()
    assert a == b
    assert a != c


def test_engine_may_be_the_folder(export_dir, tmp_path):
    a = sample(export_dir, tmp_path / "a.png").read_bytes()
    result = run("sample", "--engine", str(export_dir), "--steps", "4", "--out", str(tmp_path / "b.png"), "-q")
    assert result.exit_code == 0
    assert (tmp_path / "b.png").read_bytes() == a


def test_latents_file_is_the_seeded_noise(export_dir, tmp_path):
    """--latents with the exact noise --seed would draw gives the same image (noise is pre-init_noise_sigma)."""
    shape = (1, TINY.vae.latent_channels, TINY.unet.sample_size, TINY.unet.sample_size)
    noise = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    np.save(tmp_path / "noise.npy", noise)
    a = sample(export_dir, tmp_path / "a.png", "--seed", "3").read_bytes()
    b = sample(export_dir, tmp_path / "b.png", "--seed", "3", "--latents", str(tmp_path / "noise.npy")).read_bytes()
    assert a == b


def test_num_images_writes_a_grid(export_dir, tmp_path):
    out = sample(export_dir, tmp_path / "grid.png", "--num-images", "3")
    size = TINY.vae.sample_size
    assert Image.open(out).size == (2 * size, 2 * size)  # 3 images -> 2x2 grid


def test_height_width(export_dir, tmp_path):
    out = sample(export_dir, tmp_path / "wide.png", "--height", "16", "--width", "32")
    assert Image.open(out).size == (32, 16)


def test_save_intermediates(export_dir, tmp_path):
    sample(export_dir, tmp_path / "a.png", "--save-intermediates", str(tmp_path / "steps"))
    files = sorted(p.name for p in (tmp_path / "steps").iterdir())
    assert [f for f in files if f.endswith(".npy")] == [
        "step_000_t0751.npy", "step_001_t0501.npy", "step_002_t0251.npy", "step_003_t0001.npy"]  # leading, offset 1
    assert "x0_previews.png" in files
    assert np.load(tmp_path / "steps" / "step_000_t0751.npy").shape == (1, 4, 8, 8)


@pytest.mark.parametrize("scheduler", [*SCHEDULERS, "DDPMScheduler", "DPMSolverMultistepScheduler"])
def test_schedulers_selectable(export_dir, tmp_path, scheduler):
    out = sample(export_dir, tmp_path / "a.png", "--scheduler", scheduler)
    assert Image.open(out).size == (TINY.vae.sample_size, TINY.vae.sample_size)


@pytest.mark.parametrize("scheduler", ["heun", "dpm++2m", "euler-a", "pndm"])
def test_img2img_with_other_schedulers(export_dir, tmp_path, scheduler):
    image = write_image(tmp_path / "in.png", 16)
    sample(export_dir, tmp_path / "a.png", "--scheduler", scheduler, "--init-image", str(image), "--strength", "0.6")


def test_guidance_one_and_negative_prompt(export_dir, tmp_path):
    base = sample(export_dir, tmp_path / "a.png").read_bytes()
    neg = sample(export_dir, tmp_path / "b.png", "--negative-prompt", "blue square").read_bytes()
    assert base != neg  # the negative prompt enters the unconditional half
    g1 = sample(export_dir, tmp_path / "c.png", "--guidance", "1").read_bytes()
    g1_neg = sample(export_dir, tmp_path / "d.png", "--guidance", "1", "--negative-prompt", "blue square").read_bytes()
    assert g1 == g1_neg  # w = 1 never runs the unconditional half


def test_sizes_outside_the_validated_ranges_warn_unless_quiet(export_dir, tmp_path):
    args = ("sample", "--engine", str(export_dir), "--steps", "1", "--num-images", "9", "--out", str(tmp_path / "a.png"))
    loud = run(*args)
    assert loud.exit_code == 0, loud.output
    assert "warning: unet: batch 18 (range 1-16): outside the range validated at export" in loud.stderr
    assert "warning: vae_decoder: batch 9 (range 1-8)" in loud.stderr
    quiet = run(*args, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_json_summary(export_dir, tmp_path):
    import json

    result = run("sample", "--engine", str(export_dir), "--steps", "2", "--out", str(tmp_path / "a.png"), "--json",
                 "--prompt", "a red circle with zebra stripes")
    data = json.loads(result.stdout)
    assert data["steps"] == 2 and data["unknown_words"] == ["zebra", "stripes"]


def write_image(path, size):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("strength,expected_steps", [(1.0, 10), (0.5, 5), (0.25, 2), (0.8, 8)])
def test_img2img_runs_the_tail_of_the_schedule(export_dir, tmp_path, strength, expected_steps):
    """diffusers' get_timesteps: init_timestep = min(int(n·s), n); the last init_timestep steps run."""
    image = write_image(tmp_path / "in.png", 24)  # resized to the output size
    out = tmp_path / "o.png"
    result = run("sample", "--engine", str(export_dir), "--steps", "10", "--init-image", str(image), "--strength",
                 str(strength), "--save-intermediates", str(tmp_path / "steps"), "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    steps = sorted(p.name for p in (tmp_path / "steps").glob("*.npy"))
    assert len(steps) == expected_steps
    # leading spacing with steps_offset 1 gives 901, 801, ..., 1; img2img starts (10 - expected_steps) in
    assert steps[0] == f"step_000_t{901 - 100 * (10 - expected_steps):04d}.npy"
    assert Image.open(out).size == (TINY.vae.sample_size, TINY.vae.sample_size)


def test_img2img_is_deterministic_and_depends_on_the_image(export_dir, tmp_path):
    a_in = write_image(tmp_path / "a.png", 16)
    b_in = tmp_path / "b.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(b_in)
    args = ("--steps", "6", "--strength", "0.5", "--seed", "1")
    one = sample(export_dir, tmp_path / "1.png", "--init-image", str(a_in), *args).read_bytes()
    two = sample(export_dir, tmp_path / "2.png", "--init-image", str(a_in), *args).read_bytes()
    three = sample(export_dir, tmp_path / "3.png", "--init-image", str(b_in), *args).read_bytes()
    assert one == two
    assert one != three


def test_output_file_has_normal_permissions(export_dir, tmp_path):
    import os
    import stat

    out = sample(export_dir, tmp_path / "perm.png")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask


def test_an_overlong_prompt_warns_naming_the_dropped_words(export_dir, tmp_path):
    words = ["red", "circle", "on", "the", "left"] * 4  # 20 words; the tiny model keeps max_length - 2 = 14
    result = run("sample", "--engine", str(export_dir), "--steps", "2", "--prompt", " ".join(words),
                 "--out", str(tmp_path / "x.png"))
    assert result.exit_code == 0, result.output
    dropped = " ".join(words[TINY.text_encoder.max_length - 2:])
    assert f"warning: prompt truncated to {TINY.text_encoder.max_length} tokens; dropped: {dropped!r}" in result.output
