"""NumPy noise schedulers with the diffusers protocol (``set_timesteps`` → loop over ``.timesteps`` → ``step``).

Never imports torch: the sampling loop runs the same whatever computed the model output.

    scheduler = from_config(json.load(open("scheduler/scheduler_config.json")), "euler")
    scheduler.set_timesteps(50)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(denoise(scheduler.scale_model_input(x, t), t), t, x).prev_sample

img2img, as diffusers' pipelines: ``t_start = n - min(int(n * strength), n)``, run ``timesteps[t_start * order:]``
after ``set_begin_index(t_start * order)``, starting from ``add_noise(x0, noise, timesteps[:1])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from difftrt.errors import ConfigError
from difftrt.schedulers.base import BaseConfig, DiscreteScheduler, Prediction, SchedulerConfig, SchedulerOutput
from difftrt.schedulers.ddim import DDIMConfig, DDIMScheduler
from difftrt.schedulers.ddpm import DDPMConfig, DDPMScheduler, VarianceType
from difftrt.schedulers.dpm import DPMSolverConfig, DPMSolverMultistepScheduler
from difftrt.schedulers.euler import EulerConfig, EulerDiscreteScheduler
from difftrt.schedulers.euler_ancestral import EulerAncestralConfig, EulerAncestralDiscreteScheduler
from difftrt.schedulers.heun import HeunConfig, HeunDiscreteScheduler
from difftrt.schedulers.lms import LMSConfig, LMSDiscreteScheduler
from difftrt.schedulers.pndm import PNDMConfig, PNDMScheduler
from difftrt.schedulers.unipc import UniPCConfig, UniPCMultistepScheduler

SCHEDULERS: dict[str, type[DiscreteScheduler]] = {  # CLI short names
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,  # the config's solver_order / algorithm_type still apply
    "lms": LMSDiscreteScheduler,
    "pndm": PNDMScheduler,
    "heun": HeunDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,  # bh2, order 2 by default; the config's solver_order / solver_type apply
}
_BY_CLASS_NAME = {cls.config_class.class_name: cls for cls in SCHEDULERS.values()}


def from_config(config: Mapping[str, Any], class_name: str | None = None) -> DiscreteScheduler:
    """A scheduler from a diffusers ``scheduler_config.json`` dict.

    ``class_name`` (a short name of ``SCHEDULERS`` or a diffusers class name such as "EulerDiscreteScheduler")
    overrides the config's ``_class_name``, as diffusers' ``EulerDiscreteScheduler.from_config(pndm_config)``
    does; fields the class does not use are ignored, missing ones take that class's defaults.
    """
    name = class_name if class_name is not None else config.get("_class_name")
    if name is None:
        raise ConfigError(f"the scheduler config has no '_class_name'; pass class_name= one of {', '.join(SCHEDULERS)}")
    cls = SCHEDULERS.get(str(name).lower()) or _BY_CLASS_NAME.get(str(name))
    if cls is None:
        supported = ", ".join([*SCHEDULERS, *_BY_CLASS_NAME])
        source = "" if class_name is not None else " (the config's _class_name; choose another with --scheduler)"
        raise ConfigError(f"unsupported scheduler {name!r}{source}; supported: {supported}")
    return cls.from_config(config)


__all__ = [
    "SCHEDULERS",
    "BaseConfig",
    "DDIMConfig",
    "DDIMScheduler",
    "DDPMConfig",
    "DDPMScheduler",
    "DPMSolverConfig",
    "DPMSolverMultistepScheduler",
    "DiscreteScheduler",
    "EulerAncestralConfig",
    "EulerAncestralDiscreteScheduler",
    "EulerConfig",
    "EulerDiscreteScheduler",
    "HeunConfig",
    "HeunDiscreteScheduler",
    "LMSConfig",
    "LMSDiscreteScheduler",
    "PNDMConfig",
    "PNDMScheduler",
    "Prediction",
    "SchedulerConfig",
    "SchedulerOutput",
    "UniPCConfig",
    "UniPCMultistepScheduler",
    "VarianceType",
    "from_config",
]
