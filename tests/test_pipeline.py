"""The sampler over real engines: CFG batching, ORT vs torch agreement."""

from __future__ import annotations

import numpy as np
import pytest

from difftrt.adapters import UNetAdapter
from difftrt.pipeline import SampleRequest
from difftrt.runtime import load_pipeline
from difftrt.sampling import guide, unet_denoiser
from difftrt.schedulers import from_config

from .conftest import TINY, infer


class RecordingEngine:
    """Wraps a real engine and records the batch size of every call."""

    def __init__(self, engine):
        self.engine, self.rows = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def infer(self, feeds):
        self.rows.append(feeds["sample"].shape[0])
        return self.engine.infer(feeds)


def test_guide_is_the_cfg_formula():
    u, c = np.array([1.0, -2.0]), np.array([3.0, 0.5])
    np.testing.assert_allclose(guide(u, c, 7.5), [1 + 7.5 * 2, -2 + 7.5 * 2.5])
    np.testing.assert_allclose(guide(u, c, 1.0), c)
    np.testing.assert_allclose(guide(u, c, 0.0), u)


def test_cfg_is_one_batched_call_equal_to_two_separate_calls(export_dir):
    pipe, _ = load_pipeline(export_dir)
    unet = RecordingEngine(pipe.engines["unet"])
    call = UNetAdapter(unet)
    cond, _ = pipe.encode_prompt(["a red circle", "a blue square"])
    uncond, _ = pipe.encode_prompt(["", ""])
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8), dtype=np.float32)
    guided = unet_denoiser(call, cond, uncond, 4.0)(x, 500)
    assert unet.rows == [4]  # one call, 2B rows
    t = np.full(2, 500, np.float32)
    eps_c = infer(unet.engine, {"sample": x, "timestep": t, "encoder_hidden_states": cond})["out_sample"]
    eps_u = infer(unet.engine, {"sample": x, "timestep": t, "encoder_hidden_states": uncond})["out_sample"]
    np.testing.assert_allclose(guided, eps_u + 4.0 * (eps_c - eps_u), rtol=1e-4, atol=1e-5)
    unet.rows.clear()
    unguided = unet_denoiser(call, cond, uncond, 1.0)(x, 500)
    assert unet.rows == [2]
    np.testing.assert_allclose(unguided, eps_c, rtol=1e-5, atol=1e-6)


def test_ort_and_torch_pipelines_agree(export_dir, ckpt_dir):
    pytest.importorskip("torch")
    from difftrt.backends.torch_ref import torch_engines
    from difftrt.models import checkpoint
    from difftrt.pipeline import Text2ImagePipeline

    pipe, artifact = load_pipeline(export_dir)
    reference = Text2ImagePipeline(torch_engines(checkpoint.load(ckpt_dir)), pipe.tokenizer, TINY)
    req = SampleRequest("a red circle on the left", steps=10, guidance=5.0, seed=1, num_images=2)
    a = pipe(req, from_config(artifact.scheduler_config))
    b = reference(req, from_config(artifact.scheduler_config))
    np.testing.assert_allclose(a.latents, b.latents, rtol=1e-3, atol=1e-3)
    assert np.abs(a.images.astype(int) - b.images).max() <= 1


def test_a_grid_with_repeated_timesteps_runs_every_step(export_dir):
    """Karras σ's on the cosine schedule repeat the first timesteps; txt2img starts at index 0 explicitly, so a
    multistep scheduler runs all its steps (looking the first timestep up would start at its second copy)."""
    pipe, _ = load_pipeline(export_dir)
    scheduler = from_config({"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}, "unipc")
    result = pipe(SampleRequest("a red circle", steps=10), scheduler)
    assert len(set(scheduler.timesteps.tolist())) < len(scheduler.timesteps)  # the grid does repeat
    assert scheduler.step_index == 10 and np.isfinite(result.latents).all()
