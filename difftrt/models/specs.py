"""One spec per exported component: tensor names, dtypes, symbolic shapes, dimension ranges, sample inputs.

Export (names, dynamic axes), validation (sample inputs at several sizes), the runtime (checking that a file
is the component it claims to be) and engine profiles (min/opt/max) all read these. Tensor-name strings
appear nowhere else. No torch here: the runtime reads specs too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from difftrt.config import ModelConfig

Dim = int | str  # a fixed size, or the name of a dynamic dimension


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32" or "int64"
    shape: tuple[Dim, ...]
    value_range: tuple[float, float] | None = None  # sample inputs: uniform in [lo, hi); None: standard normal

    def resolve(self, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else dims[d] for d in self.shape)

    def sample(self, dims: dict[str, int], rng: np.random.Generator) -> np.ndarray:
        shape = self.resolve(dims)
        if self.dtype == "int64":
            lo, hi = self.value_range or (0, 2)
            return rng.integers(int(lo), int(hi), size=shape, dtype=np.int64)
        if self.value_range is None:
            return rng.standard_normal(shape, dtype=np.float32)
        lo, hi = self.value_range
        return rng.uniform(lo, hi, size=shape).astype(np.float32)


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # "unet", "text_encoder", "vae_decoder", "vae_encoder"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dim_ranges: tuple[tuple[str, int, int, int], ...]  # (dimension, min, opt, max) for engine profiles

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The ``torch.onnx.export`` mapping: tensor name -> {axis: dimension name}."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs + self.outputs}

    def sample_inputs(self, dims: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {t.name: t.sample(dims, rng) for t in self.inputs}

    def to_json(self) -> dict:
        tensor = lambda t: {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}  # noqa: E731
        return {"inputs": [tensor(t) for t in self.inputs], "outputs": [tensor(t) for t in self.outputs]}


def dims(cfg: ModelConfig, batch: int, latent_height: int | None = None, latent_width: int | None = None) -> dict[str, int]:
    """Every dimension name used by the specs, for one batch size and latent size."""
    h = latent_height or cfg.unet.sample_size
    w = latent_width or cfg.unet.sample_size
    f = cfg.vae.downsample_factor
    return {"batch": batch, "latent_height": h, "latent_width": w, "image_height": h * f, "image_width": w * f}


def component_specs(cfg: ModelConfig, max_batch: int = 16) -> dict[str, ComponentSpec]:
    """The four exported components of a text-to-image model."""
    te, u, v = cfg.text_encoder, cfg.unet, cfg.vae
    latent = ("batch", v.latent_channels, "latent_height", "latent_width")
    image = ("batch", v.in_channels, "image_height", "image_width")
    hidden = ("batch", te.max_length, te.hidden_size)
    batch = ("batch", 1, 2, max_batch)
    s, f = u.sample_size, v.downsample_factor
    lat_h = ("latent_height", u.downsample_factor, s, 4 * s)
    lat_w = ("latent_width", u.downsample_factor, s, 4 * s)
    img_h = ("image_height", u.downsample_factor * f, s * f, 4 * s * f)
    img_w = ("image_width", u.downsample_factor * f, s * f, 4 * s * f)
    return {
        "text_encoder": ComponentSpec(
            "text_encoder",
            (TensorSpec("input_ids", "int64", ("batch", te.max_length), (0, te.vocab_size)),),
            (TensorSpec("last_hidden_state", "float32", hidden),),
            (batch,),
        ),
        "unet": ComponentSpec(
            "unet",
            (
                TensorSpec("sample", "float32", latent),
                TensorSpec("timestep", "float32", ("batch",), (0, 1000)),
                TensorSpec("encoder_hidden_states", "float32", hidden),
            ),
            (TensorSpec("out_sample", "float32", ("batch", u.out_channels, "latent_height", "latent_width")),),
            (batch, lat_h, lat_w),
        ),
        "vae_decoder": ComponentSpec(
            "vae_decoder",
            (TensorSpec("latent_sample", "float32", latent),),
            (TensorSpec("sample", "float32", image),),
            (batch, lat_h, lat_w),
        ),
        "vae_encoder": ComponentSpec(
            "vae_encoder",
            (TensorSpec("sample", "float32", image),),
            (TensorSpec("latent_parameters", "float32", ("batch", 2 * v.latent_channels, "latent_height", "latent_width")),),
            (batch, img_h, img_w),
        ),
    }
