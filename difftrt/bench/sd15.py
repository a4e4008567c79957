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

from dataclasses import dataclass
from typing import Any

from difftrt.config import ModelConfig, TextEncoderConfig, UNetConfig, VAEConfig
from difftrt.errors import DependencyError

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
    u, v, t = arch.unet, arch.vae, arch.text
    groups = u.get("norm_num_groups", 32)
    return ModelConfig(
        unet=UNetConfig(in_channels=u["in_channels"], out_channels=u["out_channels"],
                        block_channels=tuple(u["block_out_channels"]), cross_attention_dim=u["cross_attention_dim"],
                        norm_groups=groups, sample_size=u["sample_size"], attention_levels=()),
        vae=VAEConfig(in_channels=v["in_channels"], latent_channels=v["latent_channels"],
                      block_channels=tuple(v["block_out_channels"]), norm_groups=v.get("norm_num_groups", 32),
                      scaling_factor=v["scaling_factor"], sample_size=v["sample_size"]),
        text_encoder=TextEncoderConfig(vocab_size=t["vocab_size"], max_length=t["max_position_embeddings"],
                                       hidden_size=t["hidden_size"], num_layers=t["num_hidden_layers"],
                                       num_heads=t["num_attention_heads"]),
    )


def random_modules(arch: Architecture, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """{"text_encoder", "unet", "vae_decoder"}: random-weight fp32 modules in eval mode, wrapped for ``TorchEngine``.
    Needs diffusers and transformers (``pip install diffusers transformers``); nothing is downloaded."""
    try:
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel
    except ImportError as exc:
        raise DependencyError(f"the {arch.name} benchmark builds diffusers/transformers modules ({exc}); "
                              "pip install diffusers transformers") from None
    from torch import nn

    class UNetCall(nn.Module):
        def __init__(self, unet: nn.Module) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any) -> Any:
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    class DecoderCall(nn.Module):
        def __init__(self, vae: nn.Module) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, latent_sample: Any) -> Any:
            return self.vae.decode(latent_sample, return_dict=False)[0]

    class TextCall(nn.Module):
        def __init__(self, text: nn.Module) -> None:
            super().__init__()
            self.text = text

        def forward(self, input_ids: Any) -> Any:
            return self.text(input_ids=input_ids, return_dict=False)[0]  # last_hidden_state

    torch.manual_seed(seed)
    with torch.device(device):
        modules = {"text_encoder": TextCall(CLIPTextModel(CLIPTextConfig(**arch.text))),
                   "unet": UNetCall(UNet2DConditionModel(**arch.unet)),
                   "vae_decoder": DecoderCall(AutoencoderKL(**arch.vae))}
    return {name: m.eval() for name, m in modules.items()}
