"""The schedulers and the guided loop run unchanged on any Array API library (difftrt.arrays).

The oracle is the NumPy path, which test_scheduler_parity*.py hold to diffusers. ``array_api_strict`` is a
minimal implementation of the standard that refuses anything outside it (NumPy-only functions, implicit
host conversion, mixed-library arithmetic), so a loop that runs on it and gives NumPy's numbers uses
nothing but the standard; torch CPU tensors are the second, real library (the one a CUDA torch loop uses);
CuPy joins where it is installed with a GPU.
"""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
import torch

from difftrt.arrays import cast, dtype_name, like, namespace, to_host
from difftrt.sampling import denoise_loop, unet_denoiser
from difftrt.schedulers import from_config
from difftrt.schedulers.base import row_quantile, threshold_sample


def _cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # no cupy, or no GPU behind it
        return None


LIBRARIES = {
    "array_api_strict": lambda a: array_api_strict.asarray(a),
    "torch": lambda a: torch.from_numpy(np.array(a)),
}
if _cupy() is not None:
    LIBRARIES["cupy"] = lambda a: _cupy().asarray(a)
EXACT = {"array_api_strict"}  # NumPy underneath: the same operations in the same order give the same bits

CONFIGS = {  # name -> (scheduler, config overrides): the defaults plus the branches with their own array code
    "ddim": ("ddim", {}), "ddim-eta": ("ddim", {}),
    "ddim-threshold": ("ddim", {"thresholding": True, "clip_sample": False}),
    "ddpm": ("ddpm", {}), "ddpm-v": ("ddpm", {"prediction_type": "v_prediction"}),
    "ddpm-learned": ("ddpm", {"variance_type": "learned_range"}),
    "euler": ("euler", {}), "euler-karras": ("euler", {"use_karras_sigmas": True}), "euler-a": ("euler-a", {}),
    "dpm++2m": ("dpm++2m", {}), "dpm++2m-sde": ("dpm++2m", {"algorithm_type": "sde-dpmsolver++"}),
    "dpm++3m": ("dpm++2m", {"solver_order": 3}),
    "lms": ("lms", {}), "pndm": ("pndm", {}), "pndm-prk": ("pndm", {"skip_prk_steps": False}), "heun": ("heun", {}),
    "unipc": ("unipc", {}), "unipc-bh1-3": ("unipc", {"solver_type": "bh1", "solver_order": 3}),
}
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}


def model(x, t: float):
    """A smooth stand-in for a U-Net output, written in x's own namespace."""
    xp = namespace(x)
    return xp.tanh(x) * 0.7 + 0.05 * (t / 1000.0)


def model_with_variance(x, t: float):
    """For the learned variance types: (B, 2C) = [output; v ∈ (−1, 1)], v interpolating log β and log β̃."""
    xp = namespace(x)
    return xp.concat([model(x, t), xp.tanh(x * 0.5)], axis=1)


def run(name: str, x0: np.ndarray, to_lib, steps: int = 8):
    short, overrides = CONFIGS[name]
    scheduler = from_config({**SD_BETAS, **overrides}, short)
    scheduler.set_timesteps(steps)
    kwargs = {"eta": 1.0} if name == "ddim-eta" else {}
    trace = []
    x = to_lib(x0 * scheduler.init_noise_sigma)
    callback = lambda i, t, x, pred: trace.append((to_host(x), to_host(pred)))  # noqa: E731
    denoise = model_with_variance if name == "ddpm-learned" else model
    out = denoise_loop(scheduler, denoise, x, scheduler.timesteps, np.random.default_rng(7), kwargs, callback)
    return out, trace


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_scheduler_loop_matches_numpy(name, library):
    x0 = np.random.default_rng(0).standard_normal((2, 4, 8, 8), dtype=np.float32)
    want, want_trace = run(name, x0, np.asarray)
    got, got_trace = run(name, x0, LIBRARIES[library])
    assert type(got) is type(LIBRARIES[library](x0)), "the loop left its array library"
    assert dtype_name(got.dtype) == "float32"
    assert len(got_trace) == len(want_trace)
    for (x_got, p_got), (x_want, p_want) in zip(got_trace, want_trace):
        if library in EXACT:
            np.testing.assert_array_equal(x_got, x_want)
            np.testing.assert_array_equal(p_got, p_want)
        else:  # another library's tanh / fused kernels may differ in the last bits
            np.testing.assert_allclose(x_got, x_want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(p_got, p_want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("library", sorted(LIBRARIES))
@pytest.mark.parametrize("short", ["ddim", "euler", "dpm++2m"])
def test_add_noise_matches_numpy(short, library):
    rng = np.random.default_rng(1)
    x0, noise = (rng.standard_normal((3, 4, 4, 4), dtype=np.float32) for _ in range(2))
    scheduler = from_config(SD_BETAS, short)
    scheduler.set_timesteps(10)
    t = np.repeat(scheduler.timesteps[3:4], 3)
    want = scheduler.add_noise(x0, noise, t)
    lib = LIBRARIES[library]
    got = scheduler.add_noise(lib(x0), lib(noise), t)
    np.testing.assert_allclose(to_host(got), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.7, 0.995, 1.0])
@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_row_quantile_is_numpys_linear_quantile(n, q):
    x = np.random.default_rng(n).standard_normal((3, n))
    np.testing.assert_array_equal(row_quantile(x, q), np.quantile(x, q, axis=1, keepdims=True))
    strict = row_quantile(array_api_strict.asarray(x), q)
    np.testing.assert_array_equal(to_host(strict), np.quantile(x, q, axis=1, keepdims=True))


def test_threshold_sample_on_torch_matches_diffusers_formula():
    """diffusers' _threshold_sample: s = clamp(quantile(|x|, r, dim=1), 1, max); clamp(x, -s, s) / s."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    flat = x.reshape(2, -1)
    s = torch.quantile(flat.abs(), 0.9, dim=1).clamp(1.0, 2.5)[:, None]
    want = (torch.clamp(flat, -s, s) / s).reshape(x.shape)
    torch.testing.assert_close(threshold_sample(x, 0.9, 2.5), want)


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_guided_denoiser_stays_in_its_library(library):
    lib = LIBRARIES[library]
    rng = np.random.default_rng(2)
    x, cond, uncond = (rng.standard_normal(s, dtype=np.float32) for s in ((2, 4, 8, 8), (2, 5, 6), (2, 5, 6)))

    def unet(x_t, t, context):  # the rows of x_t meet the rows of context: [∅; c]
        xp = namespace(x_t)
        return x_t * xp.reshape(xp.mean(context, axis=(1, 2)), (-1, 1, 1, 1)) + t

    want = unet_denoiser(unet, cond, uncond, 7.5)(x, 3.0)
    got = unet_denoiser(unet, lib(cond), lib(uncond), 7.5)(lib(x), 3.0)
    assert type(got) is type(lib(x))
    np.testing.assert_allclose(to_host(got), want, rtol=1e-5, atol=1e-5)  # reductions may sum in another order
    e_uncond, e_cond = unet(x, 3.0, uncond), unet(x, 3.0, cond)  # closed form: eps(∅) + w (eps(c) − eps(∅))
    np.testing.assert_allclose(want, e_uncond + 7.5 * (e_cond - e_uncond), rtol=1e-5, atol=1e-5)


def test_array_helpers_move_and_cast():
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = torch.zeros(1, dtype=torch.float32)
    moved = like(host, t)
    assert isinstance(moved, torch.Tensor) and moved.dtype == torch.float32
    np.testing.assert_array_equal(to_host(moved), host.astype(np.float32))
    assert like(host, np.zeros(1, np.float32)).dtype == np.float32
    assert dtype_name(torch.float16) == dtype_name(np.float16) == "float16"
    kept = np.zeros(3, np.float32)
    assert cast(kept, np.float32) is kept
