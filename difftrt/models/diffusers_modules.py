"""diffusers/transformers modules behind difftrt's component calls: each wrapper's ``forward`` takes the spec's
inputs positionally and returns the one output tensor (what ``torch.onnx.export`` traces and ``TorchEngine`` runs),
computing exactly what ``StableDiffusionPipeline`` computes at that stage."""

from __future__ import annotations

from typing import Any

from torch import nn


class UNetCall(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any) -> Any:
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class DecoderCall(nn.Module):
    """latents / scaling_factor -> image in [-1, 1] (``vae.decode``: post_quant_conv, then the decoder)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: Any) -> Any:
        return self.vae.decode(latent_sample, return_dict=False)[0]


class EncoderCall(nn.Module):
    """image -> the posterior's moments (mean and log-variance stacked on channels), as ``vae.encode`` makes them."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, sample: Any) -> Any:
        moments = self.vae.encoder(sample)
        quant_conv = getattr(self.vae, "quant_conv", None)
        return moments if quant_conv is None else quant_conv(moments)


class TextCall(nn.Module):
    """input_ids -> last_hidden_state, without an attention mask (as the pipeline calls CLIP)."""

    def __init__(self, text: nn.Module) -> None:
        super().__init__()
        self.text = text

    def forward(self, input_ids: Any) -> Any:
        return self.text(input_ids=input_ids, return_dict=False)[0]


def component_calls(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module) -> dict[str, nn.Module]:
    """The four exported components (names as in the specs), in eval mode."""
    calls = {"text_encoder": TextCall(text_encoder), "unet": UNetCall(unet), "vae_decoder": DecoderCall(vae),
             "vae_encoder": EncoderCall(vae)}
    return {name: call.eval() for name, call in calls.items()}
