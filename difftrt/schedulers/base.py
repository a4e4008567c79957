"""What every scheduler shares: the config, the step output, ε/v/x₀ conversion (in the ᾱ and the σ
parametrisation), x₀ clipping and thresholding, the begin index, and the forward process of DDPM, DDIM and PNDM.

Notation: x_t the noisy sample at timestep t, x_0 the clean sample, eps the unit Gaussian noise, with
x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·eps, and v = sqrt(ᾱ_t)·eps − sqrt(1 − ᾱ_t)·x_0 (Salimans & Ho 2022,
"Progressive Distillation", appendix D). Arrays are (B, C, H, W); any shape with the batch first works.

The per-step arrays may come from any Array API library (``difftrt.arrays``): NumPy on the host, CuPy or
torch on a GPU; every step computes in the namespace of ``sample`` and returns arrays of that namespace,
device and dtype. The schedule tables (ᾱ, σ, timesteps) are host NumPy and enter the steps as Python floats.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from difftrt.arrays import cast, is_host, like, namespace
from difftrt.errors import ConfigError, UsageError
from difftrt.schedulers.betas import (
    BetaSchedule,
    TimestepSpacing,
    make_betas,
    make_timesteps,
    parse_choice,
    rescale_zero_terminal_snr,
)

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are strings here

logger = logging.getLogger(__name__)


class Prediction(str, Enum):
    """What the model outputs (diffusers' ``prediction_type``)."""

    EPSILON = "epsilon"  # the noise eps
    V_PREDICTION = "v_prediction"  # the velocity v
    SAMPLE = "sample"  # x_0 itself


@dataclass(frozen=True)
class BaseConfig:
    """Fields every diffusers scheduler has. Names and defaults are diffusers', so its ``scheduler_config.json``
    loads as is; subclasses add their own fields and may override defaults (e.g. ``timestep_spacing``)."""

    class_name: ClassVar[str] = ""  # diffusers' ``_class_name`` for the subclass
    # field -> the values difftrt supports, for diffusers options it implements only partly (ConfigError otherwise)
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = {}

    num_train_timesteps: int = 1000  # T, number of training timesteps
    beta_start: float = 0.0001  # first β of the linear / scaled_linear schedules
    beta_end: float = 0.02  # last β of the linear / scaled_linear schedules
    beta_schedule: BetaSchedule = BetaSchedule.LINEAR  # how β is laid out over the T steps
    trained_betas: tuple[float, ...] | None = None  # explicit β_1..β_T; overrides the three fields above
    prediction_type: Prediction = Prediction.EPSILON  # what the model outputs
    timestep_spacing: TimestepSpacing = TimestepSpacing.LEADING  # how inference timesteps are picked
    steps_offset: int = 0  # added to "leading" timesteps (Stable Diffusion 1.x uses 1)

    def __post_init__(self) -> None:
        self._coerce("beta_schedule", BetaSchedule)
        self._coerce("prediction_type", Prediction)
        self._coerce("timestep_spacing", TimestepSpacing)
        if self.trained_betas is not None:
            object.__setattr__(self, "trained_betas", tuple(float(b) for b in self.trained_betas))
        big_t = self.num_train_timesteps
        if isinstance(big_t, bool) or not isinstance(big_t, int) or big_t < 1:
            raise ConfigError(f"num_train_timesteps must be a positive integer, got {big_t!r}")
        for field, supported in self.restricted.items():
            value = getattr(self, field)
            if value not in supported:
                shown = repr(value.value if isinstance(value, Enum) else value)
                choices = ", ".join(repr(v.value if isinstance(v, Enum) else v) for v in supported)
                raise ConfigError(
                    f"{field}={shown} is not supported by difftrt's {self.class_name}; supported: {choices} "
                    f"(set {field!r} in the scheduler config to one of these)"
                )

    def _coerce(self, field: str, choices: type[Enum]) -> None:
        """Replace the string in ``field`` by its enum member (frozen, hence ``object.__setattr__``)."""
        object.__setattr__(self, field, parse_choice(choices, getattr(self, field), field))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Self:
        """Build from a diffusers-style dict: unknown and ``_``-prefixed keys are ignored, missing ones defaulted."""
        known = {f.name for f in fields(cls)}
        ignored = sorted(k for k in config if k not in known and not k.startswith("_"))
        if ignored:
            logger.debug("%s ignores scheduler config keys %s", cls.class_name, ", ".join(ignored))
        return cls(**{k: v for k, v in config.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """A diffusers-style dict (JSON-ready), ``_class_name`` first."""
        out: dict[str, Any] = {"_class_name": self.class_name}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, Enum) else list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class SchedulerConfig(BaseConfig):
    """The fields DDPM and DDIM share on top of ``BaseConfig``: x̂_0 clipping / thresholding, zero-SNR rescaling."""

    clip_sample: bool = True  # clip predicted x_0 to ±clip_sample_range (unless thresholding)
    clip_sample_range: float = 1.0  # bound used by clip_sample
    thresholding: bool = False  # Imagen dynamic thresholding of predicted x_0 (pixel models only)
    dynamic_thresholding_ratio: float = 0.995  # quantile of |x_0| taken as the threshold s
    sample_max_value: float = 1.0  # upper bound for s
    rescale_betas_zero_snr: bool = False  # rescale β so that ᾱ_{T−1} = 0 (Lin et al. 2023)


@dataclass(frozen=True)
class SchedulerOutput:
    """What ``step`` returns; arrays have the shape, dtype, namespace and device of ``sample``."""

    prev_sample: Any  # x_{t-1}, the next loop input: (B, C, H, W)
    pred_original_sample: Any  # the predicted x_0 (after clipping), for previews: (B, C, H, W)

    @classmethod
    def of(cls, prev_sample: Any, pred_original_sample: Any, sample: Any) -> SchedulerOutput:
        """Both arrays cast to ``sample``'s dtype (no copy where they already are)."""
        return cls(cast(prev_sample, sample.dtype), cast(pred_original_sample, sample.dtype))


def from_epsilon(x_t: np.ndarray, eps: np.ndarray, alpha_bar: float) -> tuple[np.ndarray, np.ndarray]:
    """(x_0, eps) from an eps prediction: x_0 = (x_t − sqrt(1 − ᾱ)·eps) / sqrt(ᾱ)."""
    x_0 = x_t - math.sqrt(1.0 - alpha_bar) * eps
    x_0 /= math.sqrt(alpha_bar)
    return x_0, eps


def from_v_prediction(x_t: np.ndarray, v: np.ndarray, alpha_bar: float) -> tuple[np.ndarray, np.ndarray]:
    """(x_0, eps) from a v prediction: x_0 = sqrt(ᾱ)·x_t − sqrt(1 − ᾱ)·v, eps = sqrt(ᾱ)·v + sqrt(1 − ᾱ)·x_t."""
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    return a * x_t - s * v, a * v + s * x_t


def from_sample(x_t: np.ndarray, x_0: np.ndarray, alpha_bar: float) -> tuple[np.ndarray, np.ndarray]:
    """(x_0, eps) from an x_0 prediction: eps = (x_t − sqrt(ᾱ)·x_0) / sqrt(1 − ᾱ)."""
    eps = x_t - math.sqrt(alpha_bar) * x_0
    eps /= math.sqrt(1.0 - alpha_bar)
    return x_0, eps


PREDICTION_TO_X0_EPS: dict[Prediction, Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]] = {
    Prediction.EPSILON: from_epsilon,
    Prediction.V_PREDICTION: from_v_prediction,
    Prediction.SAMPLE: from_sample,
}


def x0_from_sigma_output(prediction: Prediction, x: np.ndarray, output: np.ndarray, sigma: float) -> np.ndarray:
    """x̂_0 for σ-schedulers, which carry x = x_t / sqrt(ᾱ) = x_0 + σ·eps with σ² = (1 − ᾱ)/ᾱ (Karras et al. 2022).

    The conversions above with ᾱ = 1/(1 + σ²) and x_t = x/sqrt(1 + σ²), written without the rescaled copy:
    eps: x − σ·eps; v: x/(1 + σ²) − σ/sqrt(1 + σ²)·v; sample: the output itself. x, output: (B, ...).
    """
    if prediction is Prediction.SAMPLE:
        return output
    if prediction is Prediction.EPSILON:
        x_0 = output * -sigma
        x_0 += x
        return x_0
    x_0 = output * (-sigma / math.sqrt(sigma * sigma + 1.0))
    x_0 += x * (1.0 / (sigma * sigma + 1.0))
    return x_0


def row_quantile(x: Any, q: float) -> Any:
    """The q-quantile of each row of ``x`` (B, N) -> (B, 1), linearly interpolated between order statistics
    as ``numpy.quantile``'s default method (its two-sided lerp included, so NumPy arrays give its values)."""
    xp = namespace(x)
    n = x.shape[1]
    position = q * (n - 1)
    lo = min(int(math.floor(position)), n - 1)
    hi, frac = min(lo + 1, n - 1), position - lo
    ordered = xp.sort(x, axis=1)
    a, b = ordered[:, lo:lo + 1], ordered[:, hi:hi + 1]
    return b - (b - a) * (1.0 - frac) if frac >= 0.5 else a + (b - a) * frac


def threshold_sample(x_0: Any, ratio: float, max_value: float) -> Any:
    """Imagen dynamic thresholding (Saharia et al. 2022, §2.3), as diffusers' ``_threshold_sample``.

    Per batch row, s = clip(quantile(|x_0|, ratio), 1, max_value) and x_0 → clip(x_0, −s, s) / s.
    x_0: (B, ...) -> same shape and dtype (computed in float32 at least, linear quantile interpolation).
    """
    xp = namespace(x_0)
    flat = xp.reshape(x_0, (x_0.shape[0], -1))
    if flat.dtype not in (xp.float32, xp.float64):
        flat = xp.astype(flat, xp.float32)
    s = xp.clip(row_quantile(xp.abs(flat), ratio), 1.0, max_value)
    return cast(xp.reshape(xp.clip(flat, -s, s) / s, x_0.shape), x_0.dtype)


class DiscreteScheduler:
    """The diffusers scheduler protocol over a discrete ᾱ schedule: set_timesteps, step, add_noise."""

    config_class: ClassVar[type[BaseConfig]] = SchedulerConfig
    init_noise_sigma: float = 1.0  # x_T ~ N(0, 1): no initial scaling
    order: int = 1  # model calls per inference step (img2img skips ``order`` entries of .timesteps per step)

    def __init__(self, config: BaseConfig | None = None) -> None:
        self.config = self.config_class() if config is None else config
        if not isinstance(self.config, self.config_class):
            want, got = self.config_class.__name__, type(config).__name__
            raise ConfigError(f"{type(self).__name__} needs a {want}, got {got}")
        c = self.config
        betas = make_betas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end, c.trained_betas)
        zero_snr = getattr(c, "rescale_betas_zero_snr", False)
        self.betas = rescale_zero_terminal_snr(betas) if zero_snr else betas  # (T,) float64
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)  # ᾱ_t: (T,) float64
        self.num_inference_steps: int | None = None
        self.timesteps = np.arange(c.num_train_timesteps, dtype=np.int64)[::-1].copy()  # (n,) int64, descending
        self._begin_index: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """Build from a diffusers ``scheduler_config.json`` dict (its ``_class_name`` is not checked here)."""
        return cls(cls.config_class.from_dict(config))

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Pick the ``num_inference_steps`` timesteps the loop visits; raises ``UsageError`` outside 1..T."""
        c = self.config
        self.timesteps = make_timesteps(c.timestep_spacing, num_inference_steps, c.num_train_timesteps, c.steps_offset)
        self.num_inference_steps = int(num_inference_steps)
        self._begin_index = None

    @property
    def begin_index(self) -> int | None:
        """The index in .timesteps where the loop starts (img2img), or None: set by ``set_begin_index``."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at ``.timesteps[begin_index]``, as diffusers' img2img does with ``t_start * order``.

        σ-schedulers take their step index from it (and ``add_noise`` its σ), PNDM starts plain PLMS there;
        DDPM and DDIM step by timestep value and only record it. Reset by ``set_timesteps``. Raises
        ``UsageError`` outside the grid.
        """
        i = int(begin_index)
        if not 0 <= i < len(self.timesteps):
            raise UsageError(f"begin_index must be in 0..{len(self.timesteps) - 1} (an index into .timesteps), got {i}")
        self._begin_index = i

    def scale_model_input(self, sample: np.ndarray, timestep: int | None = None) -> np.ndarray:  # noqa: ARG002
        """Identity: DDPM/DDIM feed x_t to the model unscaled."""
        return sample

    def add_noise(self, original_samples: np.ndarray, noise: np.ndarray, timesteps: int | np.ndarray) -> np.ndarray:
        """Forward process q(x_t | x_0): sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·noise.

        original_samples, noise: (B, ...); timesteps: an int, or (B,) ints, one per row. Returns (B, ...).
        """
        t = np.asarray(timesteps)
        if t.dtype.kind not in "iu" or t.size == 0 or t.min() < 0 or t.max() >= len(self):
            raise UsageError(f"add_noise timesteps must be integers in 0..{len(self) - 1}, got {timesteps!r}")
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar = alpha_bar.reshape(alpha_bar.shape + (1,) * (original_samples.ndim - alpha_bar.ndim))
        return like(np.sqrt(alpha_bar), original_samples) * original_samples + like(
            np.sqrt(1.0 - alpha_bar), original_samples) * noise

    def _check_timestep(self, timestep: int | np.integer) -> int:
        t = int(timestep)
        if not 0 <= t < len(self):
            raise UsageError(f"timestep must be in 0..{len(self) - 1}, got {timestep}; iterate over .timesteps")
        return t

    def _predict_x0_eps(
        self, model_output: np.ndarray, sample: np.ndarray, alpha_bar: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x_0, eps) from the model output, x_0 then thresholded or clipped as the config says."""
        c = self.config
        pred_x0, pred_eps = PREDICTION_TO_X0_EPS[c.prediction_type](sample, model_output, alpha_bar)
        if c.thresholding:
            pred_x0 = threshold_sample(pred_x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        elif c.clip_sample:
            pred_x0 = namespace(pred_x0).clip(pred_x0, -c.clip_sample_range, c.clip_sample_range)
        return pred_x0, pred_eps

    def _reject_eta(self, eta: float | None) -> None:
        """η belongs to DDIM; the pipeline passes it only when set, so any other scheduler refuses it."""
        if eta is not None:
            raise UsageError(f"eta applies to the DDIM scheduler only, got eta={eta} with {type(self).__name__}; "
                             "leave it unset or use --scheduler ddim")

    @staticmethod
    def _noise(sample: Any, generator: np.random.Generator | None, variance_noise: Any | None) -> Any:
        """``variance_noise`` when given (shape of ``sample``), else a unit Gaussian draw from ``generator``.

        The draw is made on the host (float32, or float64 for a float64 sample) and copied to ``sample``'s
        device, so a seed gives the same noise whatever array library runs the loop."""
        if variance_noise is not None:
            if generator is not None:
                raise UsageError("pass either generator or variance_noise to step(), not both")
            if tuple(variance_noise.shape) != tuple(sample.shape):
                raise UsageError(f"variance_noise has shape {tuple(variance_noise.shape)}, expected {tuple(sample.shape)}")
            return like(variance_noise, sample) if is_host(variance_noise) and not is_host(sample) else variance_noise
        rng = generator if generator is not None else np.random.default_rng()
        xp = namespace(sample)
        wide = sample.dtype == xp.float64
        draw = rng.standard_normal(tuple(sample.shape), dtype=np.float64 if wide else np.float32)
        return like(draw, sample, xp.float64 if wide else xp.float32)
