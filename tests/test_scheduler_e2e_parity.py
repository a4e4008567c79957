"""Every scheduler against diffusers' on a real exported U-Net with guidance, same noise, 12 steps.

The unit parity tests use a fake model; this one puts the real denoiser (ONNX Runtime, classifier-free
guidance) in the loop, so history-based samplers (LMS, PNDM, DPM++) see genuine model outputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from difftrt.runtime import load_pipeline
from difftrt.sampling import unet_denoiser
from difftrt.schedulers import SCHEDULERS, from_config

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"ddpm", "euler-a"}))  # deterministic ones
def test_real_model_loop_matches_diffusers(export_dir, name):
    pipe, artifact = load_pipeline(export_dir)
    config = artifact.scheduler_config
    cond, _ = pipe.encode_prompt(["a large red circle on the left on a white background"])
    uncond, _ = pipe.encode_prompt([""])
    denoise = unet_denoiser(pipe.components["unet"], cond, uncond, 5.0)
    x_T = np.random.default_rng(0).standard_normal((1, 4, 8, 8), dtype=np.float32)

    ours = from_config(config, name)
    ours.set_timesteps(12)
    theirs = getattr(diffusers, type(ours).__name__).from_config({k: v for k, v in config.items() if k != "_class_name"})
    theirs.set_timesteps(12)
    np.testing.assert_array_equal(np.asarray(ours.timesteps, np.float64), theirs.timesteps.numpy().astype(np.float64))

    x = x_T * np.float32(ours.init_noise_sigma)
    for t in ours.timesteps:
        x = ours.step(denoise(ours.scale_model_input(x, t), float(t)), t, x).prev_sample
    y = torch.from_numpy(x_T) * theirs.init_noise_sigma
    for t in theirs.timesteps:
        out = denoise(theirs.scale_model_input(y, t).numpy(), float(t))
        y = theirs.step(torch.from_numpy(out), t, y).prev_sample
    np.testing.assert_allclose(x, y.numpy(), rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(x).max())))
