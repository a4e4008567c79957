"""NumPy noise schedulers with the diffusers protocol (``set_timesteps`` → loop over ``.timesteps`` → ``step``).

Never imports torch: the sampling loop runs the same whatever computed the model output.

    scheduler = from_config(json.load(open("scheduler/scheduler_config.json")), "ddim")
    scheduler.set_timesteps(50)
    for t in scheduler.timesteps:
        x = scheduler.step(denoise(x, t), t, x).prev_sample
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from difftrt.errors import ConfigError
from difftrt.schedulers.base import DiscreteScheduler, Prediction, SchedulerConfig, SchedulerOutput
from difftrt.schedulers.ddim import DDIMConfig, DDIMScheduler
from difftrt.schedulers.ddpm import DDPMConfig, DDPMScheduler, VarianceType

SCHEDULERS: dict[str, type[DiscreteScheduler]] = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}  # CLI short names
_BY_CLASS_NAME = {cls.config_class.class_name: cls for cls in SCHEDULERS.values()}


def from_config(config: Mapping[str, Any], class_name: str | None = None) -> DiscreteScheduler:
    """A scheduler from a diffusers ``scheduler_config.json`` dict.

    ``class_name`` ("ddim", "ddpm", "DDIMScheduler", "DDPMScheduler") overrides the config's ``_class_name``,
    as diffusers' ``DDIMScheduler.from_config(pndm_config)`` does; fields the class does not use are ignored.
    """
    name = class_name if class_name is not None else config.get("_class_name")
    if name is None:
        raise ConfigError("the scheduler config has no '_class_name'; pass class_name='ddim' or 'ddpm'")
    cls = SCHEDULERS.get(str(name).lower()) or _BY_CLASS_NAME.get(str(name))
    if cls is None:
        supported = ", ".join([*SCHEDULERS, *_BY_CLASS_NAME])
        source = "" if class_name is not None else " (the config's _class_name; choose another with --scheduler)"
        raise ConfigError(f"unsupported scheduler {name!r}{source}; supported: {supported}")
    return cls.from_config(config)


__all__ = [
    "SCHEDULERS",
    "DDIMConfig",
    "DDIMScheduler",
    "DDPMConfig",
    "DDPMScheduler",
    "DiscreteScheduler",
    "Prediction",
    "SchedulerConfig",
    "SchedulerOutput",
    "VarianceType",
    "from_config",
]
