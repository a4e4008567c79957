"""Text-to-image and image-to-image: encode the prompt → denoise latents → decode with the VAE. Backend-agnostic.

The latents live where the U-Net engine's arrays live (host NumPy, or a GPU's memory for a device engine):
the noise is drawn on the host from the seed and copied over once, the loop runs there, and only the
final latents and image come back (``difftrt.arrays``)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from difftrt.adapters import adapt
from difftrt.arrays import like, namespace, to_host
from difftrt.backends.base import Engine
from difftrt.config import ModelConfig
from difftrt.errors import UsageError
from difftrt.models.tokenizer import Encoding
from difftrt.batching import SamplerState, batched_step
from difftrt.sampling import StepCallback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRequest:
    prompt: str
    negative_prompt: str = ""  # the ∅ of guidance; "" is the usual unconditional prompt
    steps: int = 25  # inference steps
    guidance: float = 5.0  # classifier-free guidance scale w; 1 disables the unconditional half
    seed: int = 0  # seeds the initial noise and any stochastic steps
    num_images: int = 1
    height: int | None = None  # pixels; None: the model's default
    width: int | None = None
    eta: float = 0.0  # DDIM's η (0: deterministic)
    latents: np.ndarray | None = None  # (N, C, h, w) unit-variance initial noise, before init_noise_sigma
    init_image: np.ndarray | None = None  # img2img: (H, W, 3) uint8 at the output size
    strength: float = 0.8  # img2img: how far the image is noised, in (0, 1]; 1 keeps nothing of it

    def check(self) -> None:
        if self.steps < 1:
            raise UsageError(f"--steps must be >= 1, got {self.steps}")
        if not math.isfinite(self.guidance):
            raise UsageError(f"--guidance must be a finite number, got {self.guidance}")
        if not math.isfinite(self.eta) or self.eta < 0:
            raise UsageError(f"--eta must be a finite number >= 0, got {self.eta}")
        if self.num_images < 1:
            raise UsageError(f"--num-images must be >= 1, got {self.num_images}")
        if not (math.isfinite(self.strength) and 0 < self.strength <= 1):
            raise UsageError(f"--strength must be in (0, 1], got {self.strength}")
        if self.init_image is not None and self.latents is not None:
            raise UsageError("--latents and --init-image exclude each other (img2img draws its noise from --seed)")


@dataclass(frozen=True)
class SampleResult:
    images: np.ndarray  # (N, H, W, 3) uint8
    latents: np.ndarray  # (N, C, h, w) float32 final latents (unscaled)
    truncated: bool  # the prompt was longer than the tokenizer's max_length
    unknown_words: tuple[str, ...]
    dropped: str = ""  # what truncation cut off the prompt


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, as diffusers' image processor rounds."""
    x = np.clip(images.astype(np.float32) / 2 + 0.5, 0.0, 1.0)
    return np.round(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]; the inverse of ``to_uint8`` up to rounding."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def img2img_start(steps: int, strength: float, order: int) -> int:
    """Index of the first timestep img2img runs, as diffusers' StableDiffusionImg2ImgPipeline.get_timesteps."""
    init_timestep = min(int(steps * strength), steps)
    return max(steps - init_timestep, 0) * order


class Text2ImagePipeline:
    """Holds the engines (behind their adapters); ``__call__`` turns a ``SampleRequest`` into images."""

    def __init__(self, engines: dict[str, Engine], tokenizer: Any, config: ModelConfig) -> None:
        """``tokenizer``: anything with ``encode(prompts) -> Encoding`` and ``max_length`` (``load_tokenizer``)."""
        self.engines, self.tokenizer, self.config = engines, tokenizer, config
        self.components = adapt(engines)

    def encode_prompt(self, prompts: list[str]) -> tuple[np.ndarray, Encoding]:
        encoding = self.tokenizer.encode(prompts)
        return self.components["text_encoder"](encoding.ids), encoding

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(N, C, h, w) latents (scaled, as the U-Net sees them) -> (N, 3, H, W) image in [-1, 1]."""
        return self.components["vae_decoder"](latents / float(self.config.vae.scaling_factor))

    def encode_image(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N, 3, H, W) in [-1, 1] -> scaled latents: a draw from the encoder's Gaussian posterior × scaling_factor."""
        moments = self.components["vae_encoder"](image)
        xp, half = namespace(moments), moments.shape[1] // 2
        mean, logvar = moments[:, :half, ...], moments[:, half:, ...]
        std = xp.exp(0.5 * xp.clip(logvar, -30.0, 20.0))  # diffusers' DiagonalGaussianDistribution clamp
        z = mean + std * like(rng.standard_normal(tuple(mean.shape), dtype=np.float32), mean)
        return z * float(self.config.vae.scaling_factor)

    def latent_shape(self, req: SampleRequest) -> tuple[int, int, int, int]:
        f, m = self.config.vae.downsample_factor, self.config.latent_factor
        default = self.config.vae.sample_size
        h, w = req.height or default, req.width or default
        if h % m or w % m or h <= 0 or w <= 0:
            raise UsageError(f"--height/--width must be positive multiples of {m} for this model, got {h}x{w}")
        return (req.num_images, self.config.vae.latent_channels, h // f, w // f)

    def timesteps(self, req: SampleRequest, scheduler: Any) -> np.ndarray:
        """Set the scheduler up for ``req`` and return the timesteps that will run (a tail of them for img2img)."""
        scheduler.set_timesteps(req.steps)
        if req.init_image is None:
            # start at index 0 explicitly: a grid with repeated timesteps (Karras σ's on a cosine schedule) would
            # otherwise be entered at the second occurrence of its first value, as diffusers' lookup does
            scheduler.set_begin_index(0)
            return scheduler.timesteps
        start = img2img_start(req.steps, req.strength, scheduler.order)
        if start >= len(scheduler.timesteps):
            raise UsageError(f"--strength {req.strength} with --steps {req.steps} leaves no step to run; raise either")
        scheduler.set_begin_index(start)
        return scheduler.timesteps[start:]

    def initial_latents(self, req: SampleRequest, shape: tuple[int, ...], scheduler: Any, t0: np.ndarray,
                        rng: np.random.Generator) -> np.ndarray:
        """x at the first timestep: scaled noise (txt2img) or the encoded image noised to ``t0`` (img2img).
        t0: (1,) the first timestep, in the scheduler's own dtype (σ-schedulers use float timesteps)."""
        if req.init_image is not None:
            if req.init_image.shape[:2] != (shape[2] * self.config.vae.downsample_factor,
                                            shape[3] * self.config.vae.downsample_factor):
                raise UsageError(f"init image is {req.init_image.shape[1]}x{req.init_image.shape[0]}, expected the output size")
            image = np.repeat(from_uint8(req.init_image[None]), req.num_images, axis=0)
            x0 = self.encode_image(image, rng)
            noise = like(rng.standard_normal(shape, dtype=np.float32), x0)
            return scheduler.add_noise(x0, noise, np.repeat(t0, shape[0]))
        if req.latents is None:
            x_T = rng.standard_normal(shape, dtype=np.float32)
        elif req.latents.shape != shape:
            raise UsageError(f"--latents has shape {req.latents.shape}, expected {shape} (N, C, h, w) for this request")
        elif not np.isfinite(req.latents).all():
            raise UsageError("--latents contains NaN or infinite values")
        else:
            x_T = req.latents.astype(np.float32)
        x_T = (x_T * np.float32(scheduler.init_noise_sigma)).astype(np.float32)
        return self.engines["unet"].asarray(x_T, "float32")  # onto the U-Net's device, once

    def start(self, req: SampleRequest, scheduler: Any, callback: StepCallback | None = None) -> SamplerState:
        """Everything before the first step: checks, prompt states, initial latents on the U-Net's device."""
        req.check()
        shape = self.latent_shape(req)
        rng = np.random.default_rng(req.seed)
        timesteps = self.timesteps(req, scheduler)
        x = self.initial_latents(req, shape, scheduler, timesteps[:1], rng)
        cond, encoding = self.encode_prompt([req.prompt] * req.num_images)
        uncond = self.encode_prompt([req.negative_prompt] * req.num_images)[0] if req.guidance != 1.0 else None
        step_kwargs = {"eta": req.eta} if req.eta else {}  # schedulers without η refuse a non-zero one
        return SamplerState(scheduler, timesteps, x, cond, uncond, req.guidance, rng, step_kwargs, callback,
                            encoding=encoding)

    def step(self, states: list[SamplerState]) -> int:
        """One denoising step for every state, in one U-Net call (``batching.batched_step``); returns its rows."""
        return batched_step(self.components["unet"], states)

    def finish(self, state: SamplerState) -> SampleResult:
        """Decode a finished state's latents into images."""
        images = to_uint8(to_host(self.decode(state.x)))
        encoding = state.encoding
        dropped = encoding.dropped[0] if encoding.dropped else ""
        return SampleResult(images, to_host(state.x), encoding.truncated[0], encoding.unknown_words, dropped)

    def __call__(self, req: SampleRequest, scheduler: Any, callback: StepCallback | None = None) -> SampleResult:
        """One request alone: the one-state case of step-level batching."""
        state = self.start(req, scheduler, callback)
        while not state.done:
            self.step([state])
        return self.finish(state)
