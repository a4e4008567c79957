"""Stage 2: text encoder + latent U-Net with the DDPM simple loss (Ho et al. 2020, eq. 14).

Notation: z_0 = scaling_factor · μ_VAE(x) the clean latent, t ~ U{0..T−1}, ε ~ N(0, I),
z_t = sqrt(ᾱ_t)·z_0 + sqrt(1 − ᾱ_t)·ε, target ε (or v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·z_0), c the caption states
(replaced by the empty caption's with probability ``cond_drop``, so classifier-free guidance works).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from difftrt.backends.torch_ref import torch_engines
from difftrt.config import ModelConfig
from difftrt.images import save_png
from difftrt.models import checkpoint
from difftrt.models.text_encoder import TextEncoder
from difftrt.models.tokenizer import Tokenizer
from difftrt.models.unet import UNet
from difftrt.pipeline import SampleRequest, Text2ImagePipeline
from difftrt.schedulers import from_config
from difftrt.train.common import EMA, TrainConfig, step_generator, train_loop
from difftrt.train.vae import load_trained_vae, posterior, to_tensor


@torch.no_grad()
def encode_latents(vae, dataset: Any, n: int, batch: int = 256) -> tuple[torch.Tensor, list[str]]:
    """Posterior means of the first ``n`` dataset images (unscaled) and their captions: computed once."""
    latents, captions = [], []
    for start in range(0, n, batch):
        images, caps, _ = dataset.batch(start, min(batch, n - start))
        latents.append(posterior(vae, to_tensor(images))[0])
        captions += caps
    return torch.cat(latents), captions


def diffusion_loss(unet: UNet, text_encoder: TextEncoder, z0: torch.Tensor, ids: torch.Tensor,
                   alphas_cumprod: torch.Tensor, prediction_type: str, g: torch.Generator) -> torch.Tensor:
    t = torch.randint(0, len(alphas_cumprod), (z0.shape[0],), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    ab = alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    target = eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * z0
    return F.mse_loss(unet(z_t, t.float(), text_encoder(ids)), target)


def train_unet(run: Path, model_cfg: ModelConfig, cfg: TrainConfig, dataset: Any, tokenizer: Tokenizer,
               scheduler_config: dict, *, cache_size: int, sample_prompts: list[str], resume: bool = False,
               quiet: bool = False) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    vae = load_trained_vae(run, model_cfg)
    latents, captions = encode_latents(vae, dataset, cache_size)
    scale = float(1.0 / latents.std())  # unit-variance latents, as Stable Diffusion chose 0.18215
    model_cfg = dataclasses.replace(model_cfg, vae=dataclasses.replace(model_cfg.vae, scaling_factor=round(scale, 5)))
    latents = latents * model_cfg.vae.scaling_factor
    unet, text_encoder = UNet(model_cfg.unet), TextEncoder(model_cfg.text_encoder)
    modules = {"unet": unet, "text_encoder": text_encoder}
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(modules, cfg.ema_decay)
    scheduler = from_config(scheduler_config)
    alphas_cumprod = torch.tensor(scheduler.alphas_cumprod, dtype=torch.float32)
    prediction = scheduler.config.prediction_type.value
    ids_all = torch.from_numpy(tokenizer.encode(captions).ids)
    empty = torch.from_numpy(tokenizer.encode([""]).ids)

    def loss_fn(step: int):
        g = step_generator(cfg.seed, step)
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.cond_drop
        ids = torch.where(drop[:, None], empty, ids_all[idx])
        loss = diffusion_loss(unet, text_encoder, latents[idx], ids, alphas_cumprod, prediction, g)
        return loss, {"loss": loss.item()}

    def shipped() -> checkpoint.Checkpoint:
        """The EMA weights with the trained VAE, as a checkpoint."""
        ckpt = checkpoint.Checkpoint(model_cfg, UNet(model_cfg.unet), vae, TextEncoder(model_cfg.text_encoder),
                                     tokenizer, scheduler_config)
        ckpt.unet.load_state_dict(ema.state_for("unet"))
        ckpt.text_encoder.load_state_dict(ema.state_for("text_encoder"))
        for m in ckpt.modules().values():
            m.eval()
        return ckpt

    def on_checkpoint(step: int) -> None:
        checkpoint.save(shipped(), run / "model", overwrite=True)

    def on_sample(step: int) -> None:
        ckpt = shipped()
        pipe = Text2ImagePipeline(torch_engines(ckpt), tokenizer, model_cfg)
        images = [pipe(SampleRequest(p, steps=25, guidance=5.0, seed=i), from_config(scheduler_config)).images
                  for i, p in enumerate(sample_prompts)]
        (run / "samples").mkdir(parents=True, exist_ok=True)
        save_png(np.concatenate(images), run / "samples" / f"unet_{step:06d}.png")

    return train_loop(run / "unet", modules, optimizer, ema, cfg, model_cfg, loss_fn, resume=resume, quiet=quiet,
                      extra_meta={"scaling_factor": model_cfg.vae.scaling_factor, "cache_size": cache_size},
                      on_checkpoint=on_checkpoint, on_sample=on_sample)
