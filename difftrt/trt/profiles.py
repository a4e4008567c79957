"""Optimisation profiles from an export's specs: what a plan will accept, and why a request does not fit.

Sizes are in pixels (``--sizes 64,96``). A dynamic build makes one profile per component covering every
size asked for: min = the smallest, opt = the first, max = the largest (default: the export's own ranges,
opt at the model's default size). ``--static`` makes min = opt = max: one batch (the U-Net's is 2× the
images, for guidance) at one size, the shape TensorRT users pick for CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass

from difftrt.config import ModelConfig
from difftrt.errors import UsageError
from difftrt.models.specs import ComponentSpec, DimRange


@dataclass(frozen=True)
class BuildOptions:
    max_batch: int | None = None  # images; None: the export's own maximum
    sizes: tuple[int, ...] = ()  # pixel sizes (square); () : the export's spatial ranges
    static: bool = False


def _pixels_per_unit(name: str, cfg: ModelConfig) -> int:
    return 1 if name.startswith("image_") else cfg.vae.downsample_factor


def profile_ranges(spec: ComponentSpec, cfg: ModelConfig, options: BuildOptions, export: str) -> tuple[DimRange, ...]:
    """The component's ranges for the plan, inside the export's validated ones (else a ``UsageError`` naming
    the bound and the re-export that would allow it)."""
    per_image = 2 if spec.name == "unet" else 1  # guidance: [∅ rows; c rows]
    batch = spec.dim_range("batch")
    images_max = batch.max // per_image
    max_images = images_max if options.max_batch is None else options.max_batch
    if max_images < 1:
        raise UsageError(f"--max-batch must be >= 1, got {max_images}")
    if max_images > images_max:
        raise UsageError(f"--max-batch {max_images}: the export was validated for up to {images_max} images; "
                         f"export again with `difftrt export --max-batch {max_images}`")
    hi = max_images * per_image
    ranges = [DimRange("batch", hi, hi, hi) if options.static else DimRange("batch", 1, min(batch.opt, hi), hi)]
    factor = cfg.latent_factor
    for r in spec.dim_ranges:
        if r.name == "batch":
            continue
        unit = _pixels_per_unit(r.name, cfg)
        for px in options.sizes:
            if px % factor or not r.min * unit <= px <= r.max * unit:
                raise UsageError(f"--sizes {px}: {spec.name} takes multiples of {factor} pixels from {r.min * unit} "
                                 f"to {r.max * unit} in {export}; export a model with a larger range for it")
        sizes = [px // unit for px in options.sizes] or [r.opt]
        if options.static:
            ranges.append(DimRange(r.name, sizes[0], sizes[0], sizes[0]))
        elif options.sizes:
            ranges.append(DimRange(r.name, min(sizes), sizes[0], max(sizes)))
        else:
            ranges.append(r)
    return tuple(ranges)


def input_shapes(spec: ComponentSpec) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Each input's (min, opt, max) shape under ``spec``'s ranges, for ``IOptimizationProfile.set_shape``."""
    corners = [spec.profile(w) for w in ("min", "opt", "max")]
    return {t.name: tuple(t.resolve(c) for c in corners) for t in spec.inputs}
