"""The torch-free checks of a diffusers folder: which weight files, the memory estimate, the sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from difftrt.errors import ArtifactError
from difftrt.models.diffusers_folder import find_weights, model_config, safetensors_parameters
from difftrt.models.specs import component_specs

STEM = "diffusion_pytorch_model"


def tensors(n: int) -> dict[str, np.ndarray]:
    return {"w": np.zeros((n, 3), np.float32), "b": np.zeros(n, np.float16), "step": np.zeros(2, np.int64)}


def test_the_header_counts_floating_elements_only(tmp_path):
    save_file(tensors(5), str(tmp_path / "a.safetensors"))
    assert safetensors_parameters(tmp_path / "a.safetensors") == 5 * 3 + 5


def test_plain_weights_win_and_other_files_are_not_variants(tmp_path):
    save_file(tensors(1), str(tmp_path / f"{STEM}.fp16.safetensors"))
    save_file(tensors(2), str(tmp_path / f"{STEM}_ema.safetensors"))  # not a variant: another file
    assert find_weights(tmp_path, STEM).variant == "fp16"
    save_file(tensors(3), str(tmp_path / f"{STEM}.safetensors"))
    weights = find_weights(tmp_path, STEM)
    assert weights.variant is None and weights.parameters == 3 * 3 + 3


def test_shards_are_counted_through_their_index(tmp_path):
    names = [f"{STEM}-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for i, name in enumerate(names):
        save_file(tensors(4 + i), str(tmp_path / name))
    (tmp_path / f"{STEM}.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": names[0], "b": names[1]}}))
    weights = find_weights(tmp_path, STEM)
    assert weights.files == tuple(tmp_path / n for n in names) and weights.parameters == (4 * 4) + (5 * 4)
    save_file(tensors(1), str(tmp_path / f"{STEM}.safetensors"))  # a single file is what the libraries load first
    assert find_weights(tmp_path, STEM).files == (tmp_path / f"{STEM}.safetensors",)


def test_several_variants_and_no_plain_file_is_an_error(tmp_path):
    for variant in ("fp16", "bf16"):
        save_file(tensors(1), str(tmp_path / f"{STEM}.{variant}.safetensors"))
    with pytest.raises(ArtifactError, match="several variants"):
        find_weights(tmp_path, STEM)


def test_a_shard_index_naming_a_missing_file_is_an_error(tmp_path):
    (tmp_path / f"{STEM}.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(ArtifactError, match="listed by the shard index but missing"):
        find_weights(tmp_path, STEM)


def test_sd15_attention_estimate_is_the_score_matrix(tmp_path):
    from difftrt.bench.sd15 import SD15
    from difftrt.models.diffusers_folder import PipelineFolder, Weights

    config = model_config(SD15.unet, SD15.vae, SD15.text, 77)
    folder = PipelineFolder(tmp_path, {"unet": SD15.unet}, {}, None, {"unet": Weights((), None, 1)}, config)
    # 2 rows per image x 8 heads x (64*64 tokens)^2 x 4 bytes at 512 px; 16 rows and (128*128)^2 at 1024 px
    assert folder.attention_bytes(1, 512) == 2 * 8 * (64 * 64) ** 2 * 4
    assert folder.attention_bytes(8, None) == 16 * 8 * (128 * 128) ** 2 * 4 == 128 * 2**30


def test_size_options_move_the_ranges(tmp_path):
    from difftrt.bench.sd15 import SD15

    config = model_config(SD15.unet, SD15.vae, SD15.text, 77)  # factor 8 (VAE) x 8 (U-Net) = 64 px
    specs = component_specs(config, max_batch=1, max_size=512, min_size=256)
    assert specs["unet"].dim_range("latent_height").to_json() == ["latent_height", 32, 64, 64]
    assert specs["vae_encoder"].dim_range("image_width").to_json() == ["image_width", 256, 512, 512]
    assert specs["unet"].dim_range("batch").to_json() == ["batch", 1, 2, 2]
    with pytest.raises(Exception, match="min size 576 exceeds max size 512"):
        component_specs(config, max_size=512, min_size=576)
    with pytest.raises(Exception, match="multiple of 64"):
        component_specs(config, max_size=500)


def test_validation_covers_a_non_square_size_when_opt_is_the_max():
    from difftrt.bench.sd15 import SD15
    from difftrt.exporter.onnx import validation_cases

    config = model_config(SD15.unet, SD15.vae, SD15.text, 77)
    spec = component_specs(config, max_batch=1, max_size=512, min_size=256)["unet"]
    assert {"batch": 2, "latent_height": 32, "latent_width": 64} in validation_cases(spec)
