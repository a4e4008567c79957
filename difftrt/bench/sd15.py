"""The Stable Diffusion 1.5 architecture with random weights, for benchmarks at real scale (no download).

The configs are the published ones of ``runwayml/stable-diffusion-v1-5`` (``unet/config.json``,
``vae/config.json``) and of the CLIP ViT-L/14 text tower (``text_encoder/config.json``), built with
diffusers' and transformers' own classes (the ``[export]``-time libraries, never needed to sample).
``TINY`` is the same layout at test size, as diffusers' own test suite builds it: two U-Net levels of
32/64 channels, a two-level VAE (so a downsampling factor of 2, not 8), a five-layer 32-wide CLIP.

Each component is wrapped so its ``forward`` takes the spec's inputs positionally and returns one tensor
(what ``TorchEngine`` runs); ``model_config`` gives the difftrt ``ModelConfig`` whose specs describe those
tensors (latent size, context width and length), so the same pipeline and adapters drive them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from difftrt.config import ModelConfig
from difftrt.errors import DependencyError
from difftrt.models.diffusers_folder import model_config as diffusers_model_config

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False, "flip_sin_to_cos": True,
    "freq_shift": 0, "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2, "downsample_padding": 1, "mid_block_scale_factor": 1, "act_fn": "silu",
    "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
}
CLIP_L_TEXT = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
}
SD15_SCHEDULER = {  # scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False,
}


@dataclass(frozen=True)
class Architecture:
    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    scheduler: dict[str, Any]


SD15 = Architecture("sd15", SD15_UNET, SD15_VAE, CLIP_L_TEXT, SD15_SCHEDULER)
TINY = Architecture(
    "sd-tiny",
    {"block_out_channels": [32, 64], "layers_per_block": 2, "sample_size": 16, "in_channels": 4, "out_channels": 4,
     "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
     "cross_attention_dim": 32, "norm_num_groups": 32},
    {"block_out_channels": [32, 64], "in_channels": 3, "out_channels": 3, "latent_channels": 4, "norm_num_groups": 32,
     "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2, "sample_size": 32,
     "scaling_factor": 0.18215},
    {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 5, "num_attention_heads": 4,
     "max_position_embeddings": 77, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
    SD15_SCHEDULER,
)
ARCHITECTURES = {a.name: a for a in (SD15, TINY)}


def model_config(arch: Architecture) -> ModelConfig:
    """The difftrt ``ModelConfig`` whose specs match the architecture's tensors (it never builds modules)."""
    return diffusers_model_config(arch.unet, arch.vae, arch.text, arch.text["max_position_embeddings"])


def _diffusers_modules(arch: Architecture, seed: int, device: str) -> tuple[Any, Any, Any]:
    try:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel
    except ImportError as exc:
        raise DependencyError(f"the {arch.name} architecture is built with diffusers/transformers ({exc}); "
                              "pip install 'difftrt[export]'") from None
    torch.manual_seed(seed)
    with torch.device(device):
        unet, vae = UNet2DConditionModel(**arch.unet), AutoencoderKL(**arch.vae)
        text = CLIPTextModel(CLIPTextConfig(**arch.text))
    return unet.eval(), vae.eval(), text.eval()


def random_modules(arch: Architecture, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """{"text_encoder", "unet", "vae_decoder", "vae_encoder"}: random-weight fp32 modules in eval mode, wrapped for
    ``TorchEngine``. Needs diffusers and transformers; nothing is downloaded."""
    from difftrt.models.diffusers_modules import component_calls

    return component_calls(*_diffusers_modules(arch, seed, device))


def byte_tokenizer(folder: Path, vocab_size: int, max_length: int = 77) -> Path:
    """A valid CLIP-format tokenizer/ folder without merges (every byte its own token), padded with unused
    entries to ``vocab_size`` with the specials last, as CLIP's are: for random-weight models, where no
    real vocabulary may be downloaded."""
    from difftrt.models.clip_tokenizer import ClipTokenizer, byte_to_unicode

    base = list(byte_to_unicode().values())
    words = base + [c + "</w>" for c in base]
    words += [f"<|unused{i}|>" for i in range(vocab_size - 2 - len(words))] + ["<|startoftext|>", "<|endoftext|>"]
    ClipTokenizer({w: i for i, w in enumerate(words)}, [], max_length).save(folder)
    return folder


def save_random_pipeline(arch: Architecture, out: Path, tokenizer_dir: Path | None = None, seed: int = 0,
                         overwrite: bool = False) -> Path:
    """Write the architecture with random weights as a diffusers ``StableDiffusionPipeline`` folder (safetensors),
    atomically. ``tokenizer_dir``: a CLIP tokenizer/ folder; its size and specials set the text encoder's
    vocabulary. Default: ``byte_tokenizer`` at the architecture's vocabulary size."""
    import diffusers
    import transformers
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from difftrt.fileio import atomic_dir
    from difftrt.models.clip_tokenizer import ClipTokenizer

    for library in (diffusers, transformers):
        library.utils.logging.disable_progress_bar()
    with atomic_dir(Path(out), overwrite) as tmp:
        if tokenizer_dir is None:
            tokenizer_dir = byte_tokenizer(tmp / "_tokenizer", arch.text["vocab_size"])
        ours = ClipTokenizer.load(tokenizer_dir)
        text = {**arch.text, "vocab_size": len(ours), "bos_token_id": ours.bos, "eos_token_id": ours.eos,
                "pad_token_id": ours.pad}
        unet, vae, text_encoder = _diffusers_modules(replace(arch, text=text), seed, "cpu")
        tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                                  model_max_length=ours.max_length)
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=PNDMScheduler.from_config(arch.scheduler), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(str(tmp), safe_serialization=True)
        shutil.rmtree(tmp / "_tokenizer", ignore_errors=True)
    return Path(out)
