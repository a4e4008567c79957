"""One spec per exported component: tensor names, dtypes, symbolic shapes, dimension ranges, precision.

The exporter builds specs from the model config (``component_specs``) and writes them into the manifest
(``ComponentSpec.to_json``); everything downstream — the runtime, the adapters, engine builders and their
profiles — reads them back from there (``ComponentSpec.from_json``) and never recomputes them. Tensor-name
strings appear nowhere else. No torch here: the runtime reads specs too.

Notation: B the batch rows of one engine call; for the U-Net B is twice the number of images when
classifier-free guidance runs (the unconditional and conditional halves in one call), so its batch range
is twice the image batch range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from difftrt.config import ModelConfig
from difftrt.errors import ArtifactError, ShapeError

Dim = int | str  # a fixed size, or the name of a dynamic dimension
COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


class Precision(str, Enum):
    """Arithmetic precision of a component's graph (recorded per component in the manifest)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def io_dtype(self) -> str:
        """NumPy dtype of the component's floating inputs and outputs. NumPy has no bfloat16, so a bf16
        graph takes and returns float32 and casts inside."""
        return "float16" if self is Precision.FP16 else "float32"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: "float32", "float16" or "int64"
    shape: tuple[Dim, ...]
    value_range: tuple[float, float] | None = None  # sample inputs: uniform in [lo, hi); None: standard normal

    def resolve(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else dims[d] for d in self.shape)

    def sample(self, dims: Mapping[str, int], rng: np.random.Generator) -> np.ndarray:
        shape = self.resolve(dims)
        if self.dtype == "int64":
            lo, hi = self.value_range or (0, 2)
            return rng.integers(int(lo), int(hi), size=shape, dtype=np.int64)
        if self.value_range is None:
            return rng.standard_normal(shape, dtype=np.float32).astype(self.dtype)
        lo, hi = self.value_range
        return rng.uniform(lo, hi, size=shape).astype(self.dtype)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.value_range is not None:
            data["value_range"] = list(self.value_range)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorSpec":
        value_range = data.get("value_range")
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["shape"]),
                   None if value_range is None else (float(value_range[0]), float(value_range[1])))


@dataclass(frozen=True)
class DimRange:
    """The sizes a dynamic dimension may take: engine profiles are built for [min, max], tuned for opt."""

    name: str
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ArtifactError(f"dimension {self.name}: need 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    def to_json(self) -> list:
        return [self.name, self.min, self.opt, self.max]


@dataclass(frozen=True)
class ComponentSpec:
    name: str  # one of COMPONENTS
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dim_ranges: tuple[DimRange, ...]  # this component's own ranges (the U-Net's batch is 2x the images')
    precision: Precision = Precision.FP32

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def dim_range(self, name: str) -> DimRange:
        return next(r for r in self.dim_ranges if r.name == name)

    def profile(self, which: str) -> dict[str, int]:
        """The dimensions at ``which`` ("min", "opt" or "max") of every range: one engine-profile corner."""
        return {r.name: getattr(r, which) for r in self.dim_ranges}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The ``torch.onnx.export`` mapping: tensor name -> {axis: dimension name}."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs + self.outputs}

    def sample_inputs(self, dims: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {t.name: t.sample(dims, rng) for t in self.inputs}

    def bind(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
        """The dimension sizes that input ``shapes`` give, checked against the spec: every input present, its
        rank and fixed sizes, one size per named dimension. Raises ``ShapeError`` naming tensor, expected, found."""
        if set(shapes) != set(self.input_names):
            raise ShapeError(f"{self.name}: inputs {sorted(shapes)} given, expected {list(self.input_names)}")
        bound: dict[str, int] = {}
        for t in self.inputs:
            shape = tuple(shapes[t.name])
            if len(shape) != len(t.shape):
                raise ShapeError(f"{self.name}: input {t.name} has rank {len(shape)} {shape}, expected rank "
                                 f"{len(t.shape)} {describe_shape(t.shape)}")
            for axis, (want, got) in enumerate(zip(t.shape, shape)):
                if isinstance(want, int) and got != want:
                    raise ShapeError(f"{self.name}: input {t.name} axis {axis} is {got}, expected {want}")
                if isinstance(want, str) and bound.setdefault(want, got) != got:
                    raise ShapeError(f"{self.name}: dimension {want} is {bound[want]} in one input and {got} in {t.name}")
        return bound

    def output_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...] | None]:
        """Each output's shape for these input ``shapes`` where the inputs bind all its named dimensions (``bind``),
        else None (the VAE's image size is the latent size times a factor the spec does not state)."""
        dims = self.bind(shapes)
        return {t.name: tuple(dims[d] if isinstance(d, str) else int(d) for d in t.shape)
                if all(d in dims for d in t.shape if isinstance(d, str)) else None for t in self.outputs}

    def out_of_range(self, dims: Mapping[str, int]) -> list[str]:
        """One phrase per dimension of ``dims`` outside its recorded range, e.g. "batch 40 (range 1-16)"."""
        return [f"{r.name} {dims[r.name]} (range {r.min}-{r.max})" for r in self.dim_ranges
                if r.name in dims and not r.min <= dims[r.name] <= r.max]

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision.value, "inputs": [t.to_json() for t in self.inputs],
                "outputs": [t.to_json() for t in self.outputs], "dim_ranges": [r.to_json() for r in self.dim_ranges]}

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> "ComponentSpec":
        """Inverse of ``to_json``; a malformed entry is an ``ArtifactError`` naming the component."""
        try:
            return cls(name, tuple(TensorSpec.from_json(t) for t in data["inputs"]),
                       tuple(TensorSpec.from_json(t) for t in data["outputs"]),
                       tuple(DimRange(str(n), int(lo), int(opt), int(hi)) for n, lo, opt, hi in data["dim_ranges"]),
                       Precision(data.get("precision", "fp32")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"the {name} entry of the manifest is malformed ({type(exc).__name__}: {exc})") from None


def describe_shape(shape: tuple) -> str:
    """(batch, 4, latent_height, ?) — a symbolic shape for messages; None (an unnamed dynamic axis) is ?."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def dims(cfg: ModelConfig, batch: int, latent_height: int | None = None, latent_width: int | None = None) -> dict[str, int]:
    """Every dimension name used by the specs, for one batch size and latent size."""
    h = latent_height or cfg.unet.sample_size
    w = latent_width or cfg.unet.sample_size
    f = cfg.vae.downsample_factor
    return {"batch": batch, "latent_height": h, "latent_width": w, "image_height": h * f, "image_width": w * f}


DEFAULT_MAX_BATCH = 8  # images per call; TensorRT's demo uses 4 for dynamic shapes, 16 for static ones


def component_specs(cfg: ModelConfig, max_batch: int = DEFAULT_MAX_BATCH,
                    precision: Mapping[str, Precision] | None = None,
                    max_size: int | None = None, min_size: int | None = None) -> dict[str, ComponentSpec]:
    """The four exported components of a text-to-image model, for up to ``max_batch`` images per call.

    Ranges: images 1..max_batch (opt 1); the U-Net 1..2·max_batch rows (opt 2: one guided image); latent
    sides from the U-Net's downsampling factor to 2× the default size (opt: the default size), as TensorRT's
    demo profiles Stable Diffusion 1.5 from 256 to 1024 pixels around 512. ``max_size`` and ``min_size``
    (pixels, multiples of the model's factor) move the largest and smallest sides; opt stays inside them."""
    if max_batch < 1:
        raise ShapeError(f"max_batch must be >= 1, got {max_batch}")
    precision = precision or {}
    te, u, v = cfg.text_encoder, cfg.unet, cfg.vae
    s, f, m = u.sample_size, v.downsample_factor, u.downsample_factor
    for what, size in (("max", max_size), ("min", min_size)):
        if size is not None and (size <= 0 or size % cfg.latent_factor):
            raise ShapeError(f"{what} size must be a positive multiple of {cfg.latent_factor} pixels for this model, "
                             f"got {size}")
    top = 2 * s if max_size is None else max_size // f
    m = m if min_size is None else min_size // f
    if m > top:
        raise ShapeError(f"min size {m * f} exceeds max size {top * f} pixels")
    s = min(max(s, m), top)
    images = DimRange("batch", 1, 1, max_batch)
    unet_rows = DimRange("batch", 1, 2, 2 * max_batch)
    lat = (DimRange("latent_height", m, s, top), DimRange("latent_width", m, s, top))  # m: the smallest side
    img = (DimRange("image_height", m * f, s * f, top * f), DimRange("image_width", m * f, s * f, top * f))

    def spec(name: str, inputs: list[tuple], outputs: list[tuple], ranges: tuple[DimRange, ...]) -> ComponentSpec:
        p = precision.get(name, Precision.FP32)
        tensor = lambda n, d, shape, vr=None: TensorSpec(n, p.io_dtype if d == "float" else d, shape, vr)  # noqa: E731
        return ComponentSpec(name, tuple(tensor(*t) for t in inputs), tuple(tensor(*t) for t in outputs), ranges, p)

    latent = ("batch", v.latent_channels, "latent_height", "latent_width")
    image = ("batch", v.in_channels, "image_height", "image_width")
    hidden = ("batch", te.max_length, te.hidden_size)
    return {
        "text_encoder": spec("text_encoder", [("input_ids", "int64", ("batch", te.max_length), (0, te.vocab_size))],
                             [("last_hidden_state", "float", hidden)], (images,)),
        # The timestep stays float32 at every precision: σ-grid timesteps are fractional.
        "unet": spec("unet", [("sample", "float", latent), ("timestep", "float32", ("batch",), (0, 1000)),
                              ("encoder_hidden_states", "float", hidden)],
                     [("out_sample", "float", ("batch", u.out_channels, "latent_height", "latent_width"))],
                     (unet_rows, *lat)),
        "vae_decoder": spec("vae_decoder", [("latent_sample", "float", latent)], [("sample", "float", image)],
                            (images, *lat)),
        "vae_encoder": spec("vae_encoder", [("sample", "float", image)],
                            [("latent_parameters", "float", ("batch", 2 * v.latent_channels, "latent_height", "latent_width"))],
                            (images, *img)),
    }
