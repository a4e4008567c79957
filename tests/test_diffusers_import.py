"""Stable Diffusion weights from a diffusers folder: import, export and sampling against diffusers' own
``StableDiffusionPipeline`` run on the same folder (a tiny random-weight pipeline saved by diffusers: nothing is
downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from difftrt.arrays import to_host
from difftrt.cli import main
from difftrt.pipeline import SampleRequest
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

PROMPT = "a large red circle on the left on a white background"
NEGATIVE = "a small blue square"
STEPS, GUIDANCE = 8, 7.5


@pytest.fixture(scope="module")
def reference_pipe(sd_tiny_dir):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(sd_tiny_dir), local_files_only=True,
                                                             safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_image(pipe, scheduler_class: str, latents: np.ndarray) -> np.ndarray:
    pipe.scheduler = getattr(diffusers, scheduler_class).from_config(pipe.scheduler.config)
    with torch.no_grad():
        return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    latents=torch.from_numpy(latents), output_type="np").images  # (N, H, W, 3) in [0, 1]


def test_export_records_the_folder_config(sd_tiny_dir, sd_tiny_export):
    manifest = json.loads((sd_tiny_export / "manifest.json").read_text())
    unet = json.loads((sd_tiny_dir / "unet" / "config.json").read_text())
    vae = json.loads((sd_tiny_dir / "vae" / "config.json").read_text())
    text = json.loads((sd_tiny_dir / "text_encoder" / "config.json").read_text())
    config = manifest["model_config"]
    assert 2 ** (len(vae["block_out_channels"]) - 1) == 2  # the tiny VAE downsamples by 2, not 8
    assert config["vae"]["block_channels"] == vae["block_out_channels"]
    assert config["vae"]["scaling_factor"] == vae["scaling_factor"]
    assert config["vae"]["sample_size"] == unet["sample_size"] * 2  # diffusers' default height
    assert config["text_encoder"]["hidden_size"] == text["hidden_size"] == unet["cross_attention_dim"]
    assert config["text_encoder"]["max_length"] == 77
    assert manifest["scheduler_config"] == json.loads((sd_tiny_dir / "scheduler" / "scheduler_config.json").read_text())
    latent = manifest["components"]["unet"]["inputs"][0]["shape"]
    assert latent[1] == unet["in_channels"]
    ranges = {r[0]: r[1:] for r in manifest["components"]["unet"]["dim_ranges"]}
    assert ranges["latent_height"] == [8, 16, 32]  # images 16-64 px: half to twice the default 32, in latents


@pytest.mark.parametrize("name", ["ddim", "euler", "pndm", "dpm++2m", "unipc"])
def test_sampling_matches_stable_diffusion_pipeline(sd_tiny_export, reference_pipe, name):
    pipe, artifact = load_pipeline(sd_tiny_export)
    scheduler = from_config(artifact.scheduler_config, name)
    latents = np.random.default_rng(7).standard_normal((1, 4, 16, 16), dtype=np.float32)
    result = pipe(SampleRequest(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=GUIDANCE, latents=latents),
                  scheduler)
    ours = np.clip(to_host(pipe.decode(result.latents)).transpose(0, 2, 3, 1) / 2 + 0.5, 0.0, 1.0)
    theirs = diffusers_image(reference_pipe, type(scheduler).__name__, latents)
    assert ours.shape == theirs.shape == (1, 32, 32, 3)
    assert np.abs(ours - theirs).max() < 1e-3
    assert theirs.std() > 0.01  # a real image, not a constant


def test_cli_sample_png_matches_the_pipeline(sd_tiny_export, reference_pipe, tmp_path):
    from PIL import Image

    latents = np.random.default_rng(3).standard_normal((1, 4, 16, 16), dtype=np.float32)
    np.save(tmp_path / "latents.npy", latents)
    out = tmp_path / "out.png"
    result = CliRunner().invoke(main, ["sample", "--engine", str(sd_tiny_export), "--prompt", PROMPT,
                                       "--negative-prompt", NEGATIVE, "--steps", str(STEPS), "--guidance",
                                       str(GUIDANCE), "--scheduler", "ddim", "--latents", str(tmp_path / "latents.npy"),
                                       "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    want = np.round(diffusers_image(reference_pipe, "DDIMScheduler", latents)[0] * 255).astype(int)
    assert np.abs(got - want).max() <= 1  # one level of rounding


def test_long_prompt_warns_with_the_dropped_words(sd_tiny_export, tmp_path):
    words = " ".join(f"circle{i}" for i in range(60)) + " finalword"
    result = CliRunner().invoke(main, ["sample", "--engine", str(sd_tiny_export), "--prompt", words, "--steps", "2",
                                       "--out", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output
    assert "finalword" in result.output and "77" in result.output


def export(folder, out):
    return CliRunner().invoke(main, ["export", "--ckpt", str(folder), "--out", str(out), "--quiet"])


def broken_copy(sd_tiny_dir, tmp_path, change):
    import shutil

    folder = tmp_path / "sd"
    shutil.copytree(sd_tiny_dir, folder)
    change(folder)
    return folder


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class Payload:
    """A pickle that, unpickled, creates a file: proof that difftrt never unpickles weights."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _pickle_only(folder):
    import pickle

    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(folder / "UNPICKLED")))


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "model_index.json").unlink(), "not a diffusers pipeline folder (no model_index.json)"),
    (lambda f: __import__("shutil").rmtree(f / "vae"), "has no vae/ folder"),
    (lambda f: (f / "unet" / "config.json").unlink(), "missing config file"),
    (lambda f: (f / "tokenizer" / "tokenizer_config.json").unlink(), "tokenizer_config.json"),
    (lambda f: (f / "scheduler" / "scheduler_config.json").unlink(), "scheduler_config.json"),
    (lambda f: _edit_json(f / "model_index.json", _class_name="StableDiffusionXLPipeline"),
     "holds a StableDiffusionXLPipeline; supported: StableDiffusionPipeline, StableDiffusionImg2ImgPipeline"),
    (lambda f: _edit_json(f / "unet" / "config.json", addition_embed_type="text_time"), "sets addition_embed_type"),
    (lambda f: _edit_json(f / "unet" / "config.json", in_channels=9), "inpainting"),
    (_pickle_only, "weights only in pickle format (diffusion_pytorch_model.bin)"),
    (lambda f: (f / "text_encoder" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json"),
     "is not a readable safetensors file"),
])
def test_bad_folders_are_one_line_errors(sd_tiny_dir, tmp_path, change, message):
    folder = broken_copy(sd_tiny_dir, tmp_path, change)
    result = export(folder, tmp_path / "out")
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not (folder / "UNPICKLED").exists()


def test_single_file_checkpoints_are_refused_with_the_conversion(tmp_path):
    ckpt = tmp_path / "v1-5-pruned.ckpt"
    ckpt.write_bytes(b"\x80\x04not read")
    result = export(ckpt, tmp_path / "out")
    assert result.exit_code != 0 and "single file" in result.output and "save_pretrained" in result.output


def test_a_model_that_will_not_fit_fails_before_loading(sd_tiny_dir):
    from difftrt.errors import ResourceError
    from difftrt.exporter.diffusers_import import load_diffusers_folder
    from difftrt.models.diffusers_folder import inspect_folder

    folder = inspect_folder(sd_tiny_dir)
    weights = sum(w.fp32_bytes for w in folder.weights.values())
    assert weights == 4 * sum(p.numel() for p in reference_modules(sd_tiny_dir))  # the headers' count is exact
    with pytest.raises(ResourceError, match=r"needs about \d+\.\d GiB of memory .* but 0\.0 GiB is available"):
        load_diffusers_folder(sd_tiny_dir, available=1 << 20)


def _drop_a_unet_weight(folder):
    from safetensors.torch import load_file, save_file

    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state.pop(sorted(state)[0])
    save_file(state, str(path))


def test_weights_that_do_not_fit_the_config_are_refused(sd_tiny_dir, tmp_path):
    """diffusers would only warn and leave the missing weight random: the export refuses instead."""
    folder = broken_copy(sd_tiny_dir, tmp_path, _drop_a_unet_weight)
    result = export(folder, tmp_path / "out")
    assert result.exit_code == 1 and "1 missing keys against UNet2DConditionModel" in result.output


def test_sizes_are_checked_before_loading(sd_tiny_dir, tmp_path):
    result = CliRunner().invoke(main, ["export", "--ckpt", str(sd_tiny_dir), "--out", str(tmp_path / "o"),
                                       "--max-size", "18"])
    assert result.exit_code == 2 and "max size must be a positive multiple of 4" in result.output
    assert "loading" not in result.output


def reference_modules(folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    return [p for cls, name in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae"), (CLIPTextModel, "text_encoder"))
            for p in cls.from_pretrained(str(folder / name), local_files_only=True).parameters()]


def test_fp16_variant_weights_are_found_and_loaded_as_fp32(sd_tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from difftrt.exporter.diffusers_import import load_diffusers_folder

    def to_variant(folder):
        for name, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                           ("text_encoder", "model")):
            path = folder / name / f"{stem}.safetensors"
            save_file({k: v.half() for k, v in load_file(str(path)).items()}, str(folder / name / f"{stem}.fp16.safetensors"))
            path.unlink()

    folder = broken_copy(sd_tiny_dir, tmp_path, to_variant)
    imported = load_diffusers_folder(folder)
    assert {w.variant for w in imported.folder.weights.values()} == {"fp16"}
    unet = imported.modules["unet"].unet
    assert next(unet.parameters()).dtype == torch.float32
    want = load_file(str(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    name, value = next(iter(want.items()))
    torch.testing.assert_close(unet.state_dict()[name], value.float())


def test_v_prediction_from_the_folder_matches_the_pipeline(sd_tiny_dir, tmp_path):
    """SD 2.x's v-prediction is a scheduler-config setting the export carries to every sampling run."""
    folder = broken_copy(sd_tiny_dir, tmp_path, lambda f: _edit_json(f / "scheduler" / "scheduler_config.json",
                                                                     prediction_type="v_prediction"))
    assert export(folder, tmp_path / "e").exit_code == 0
    pipe, artifact = load_pipeline(tmp_path / "e")
    assert artifact.scheduler_config["prediction_type"] == "v_prediction"
    reference = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), local_files_only=True,
                                                                  safety_checker=None, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    latents = np.random.default_rng(11).standard_normal((1, 4, 16, 16), dtype=np.float32)
    for name in ("ddim", "euler"):
        scheduler = from_config(artifact.scheduler_config, name)
        result = pipe(SampleRequest(PROMPT, negative_prompt=NEGATIVE, steps=STEPS, guidance=GUIDANCE,
                                    latents=latents), scheduler)
        ours = np.clip(to_host(pipe.decode(result.latents)).transpose(0, 2, 3, 1) / 2 + 0.5, 0.0, 1.0)
        theirs = diffusers_image(reference, type(scheduler).__name__, latents)
        assert np.abs(ours - theirs).max() < 1e-3, name
