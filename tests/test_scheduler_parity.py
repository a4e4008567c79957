"""Parity of difftrt.schedulers against diffusers' DDIMScheduler / DDPMScheduler over a matrix of options.

Both run the same 10-step loop with a fake model; every step's prev_sample and pred_original_sample must agree.
Stochastic steps: diffusers draws with torch.Generator().manual_seed(k); we pass the replayed draw as variance_noise.

diffusers keeps alpha_bar in float32, whose 1 - alpha_bar near t = 0 is off by up to 4e-3 relative (cosine betas
with zero-SNR rescaling); steps near the end amplify that beyond rtol 1e-4. So the option matrix hands diffusers our
float64 alpha_bar, which isolates the step formulas; the schedules themselves, and a loop on unmodified diffusers,
are compared separately at float32-schedule tolerance.
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

from difftrt.schedulers import DDIMConfig, DDIMScheduler, DDPMConfig, DDPMScheduler, from_config  # noqa: E402

SHAPE = (2, 4, 8, 8)
STEPS = 10
TOL = {"rtol": 1e-4, "atol": 1e-5}
BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]
SPACINGS = ["leading", "trailing", "linspace"]
VARIANCE_TYPES = ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]

# Strength-2 covering arrays: every pair of options takes all its value combinations in some row,
# so pairwise interactions are covered in 6 rows instead of 2**7 (DDIM) or 3 * 2**4 (DDPM).
DDIM_ROWS = [  # steps_offset, set_alpha_to_one, clip_sample, thresholding, rescale_betas_zero_snr, eta>0, use_clipped
    (0, 0, 0, 0, 0, 0, 0),
    (1, 1, 1, 1, 1, 1, 0),
    (1, 1, 1, 0, 0, 0, 1),
    (1, 0, 0, 1, 1, 0, 1),
    (0, 1, 0, 1, 0, 1, 1),
    (0, 0, 1, 0, 1, 1, 0),
]
DDPM_ROWS = [  # beta_schedule, steps_offset, clip_sample, thresholding, rescale_betas_zero_snr
    ("linear", 0, 0, 0, 0),
    ("linear", 1, 1, 1, 1),
    ("scaled_linear", 0, 0, 1, 1),
    ("scaled_linear", 1, 1, 0, 0),
    ("squaredcos_cap_v2", 0, 1, 0, 1),
    ("squaredcos_cap_v2", 1, 0, 1, 0),
]


SD15_SCHEDULER_CONFIG = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def fake_model(x: np.ndarray, t: int, learned_variance: bool = False) -> np.ndarray:
    """A fixed smooth function of (x, t); for learned variances a second block of C channels in (0.1, 0.9)."""
    out = 0.3 * x + 0.1 * np.sin(t / 100.0)
    if learned_variance:
        out = np.concatenate([out, 0.4 * np.tanh(x) + 0.5], axis=1)
    return out.astype(np.float32)


def replayed_noise(seed: int) -> np.ndarray:
    """What diffusers' randn_tensor(SHAPE, generator=torch.Generator().manual_seed(seed)) draws on CPU."""
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).numpy()


def shared_options(rescale: int, clip: int, thresholding: int, offset: int) -> dict:
    return {
        "clip_sample": bool(clip),
        "clip_sample_range": 1.5,
        "thresholding": bool(thresholding),
        "dynamic_thresholding_ratio": 0.9,
        "sample_max_value": 3.0,
        "rescale_betas_zero_snr": bool(rescale),
        "steps_offset": offset,
    }


def well_posed(prediction: str, spacing: str, rescale: int) -> bool:
    """False where eps prediction meets zero terminal SNR at t = T - 1 (not visited by "leading"): both
    libraries divide by sqrt(alpha_bar[T-1]) = 0 there; zero-SNR models use v prediction."""
    return not (rescale and prediction == "epsilon" and spacing != "leading")


def case_id(value) -> str | None:
    return "".join(map(str, value)) if isinstance(value, tuple) else None


DDIM_CASES = [
    case for case in itertools.product(BETA_SCHEDULES, PREDICTIONS, SPACINGS, DDIM_ROWS)
    if well_posed(case[1], case[2], rescale=case[3][4])
]  # fmt: skip
DDPM_CASES = [
    case for case in itertools.product(VARIANCE_TYPES, PREDICTIONS, SPACINGS, DDPM_ROWS)
    if well_posed(case[1], case[2], rescale=case[3][4])
]  # fmt: skip


def run_loops(
    ours, theirs, stochastic: bool, learned: bool = False, float64_schedule: bool = True, tol: dict = TOL, **step_kwargs
) -> None:
    """Run both loops side by side, each on its own trajectory, comparing every step."""
    if float64_schedule:
        theirs.alphas_cumprod = torch.from_numpy(ours.alphas_cumprod)
        if isinstance(theirs, diffusers.DDIMScheduler):
            theirs.final_alpha_cumprod = torch.tensor(ours.final_alpha_cumprod, dtype=torch.float64)
    ours.set_timesteps(STEPS)
    theirs.set_timesteps(STEPS)
    np.testing.assert_array_equal(ours.timesteps, theirs.timesteps.numpy())
    x_ours = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    x_theirs = torch.from_numpy(x_ours.copy())
    for k, t in enumerate(theirs.timesteps):
        t_int = int(t)
        theirs_out = theirs.step(
            torch.from_numpy(fake_model(x_theirs.numpy(), t_int, learned)),
            t,
            x_theirs,
            generator=torch.Generator().manual_seed(k) if stochastic else None,
            **step_kwargs,
        )
        ours_out = ours.step(
            fake_model(x_ours, t_int, learned),
            ours.timesteps[k],
            x_ours,
            variance_noise=replayed_noise(k) if stochastic else None,
            **step_kwargs,
        )
        assert ours_out.prev_sample.dtype == np.float32
        where = f"step {k} (t={t_int})"
        for name in ("pred_original_sample", "prev_sample"):
            want = getattr(theirs_out, name).numpy()
            np.testing.assert_allclose(getattr(ours_out, name), want, **tol, err_msg=f"{name} at {where}")
        x_ours, x_theirs = ours_out.prev_sample, theirs_out.prev_sample


def test_replayed_noise_is_what_diffusers_draws():
    generator = torch.Generator().manual_seed(7)
    drawn = randn_tensor(SHAPE, generator=generator, device=torch.device("cpu"), dtype=torch.float32)
    np.testing.assert_array_equal(replayed_noise(7), drawn.numpy())


@pytest.mark.parametrize(("beta_schedule", "prediction", "spacing", "row"), DDIM_CASES, ids=case_id)
def test_ddim_loop_matches_diffusers(beta_schedule, prediction, spacing, row):
    offset, alpha_to_one, clip, thresholding, rescale, stochastic, use_clipped = row
    options = {
        "beta_schedule": beta_schedule,
        "prediction_type": prediction,
        "timestep_spacing": spacing,
        "set_alpha_to_one": bool(alpha_to_one),
        **shared_options(rescale, clip, thresholding, offset),
    }
    ours = DDIMScheduler(DDIMConfig(**options))
    theirs = diffusers.DDIMScheduler(**options)
    eta = 0.6 if stochastic else 0.0
    run_loops(ours, theirs, bool(stochastic), eta=eta, use_clipped_model_output=bool(use_clipped))


@pytest.mark.parametrize(("variance_type", "prediction", "spacing", "row"), DDPM_CASES, ids=case_id)
def test_ddpm_loop_matches_diffusers(variance_type, prediction, spacing, row):
    beta_schedule, offset, clip, thresholding, rescale = row
    options = {
        "beta_schedule": beta_schedule,
        "prediction_type": prediction,
        "timestep_spacing": spacing,
        **shared_options(rescale, clip, thresholding, offset),
    }
    ours = DDPMScheduler(DDPMConfig(variance_type=variance_type, **options))
    # diffusers 0.42 returns NaN for fixed_large_log (sqrt of log beta, issue #14569); its intended value,
    # exp(0.5 * log beta) = sqrt(beta), is what fixed_large computes.
    theirs_variance = "fixed_large" if variance_type == "fixed_large_log" else variance_type
    theirs = diffusers.DDPMScheduler(variance_type=theirs_variance, **options)
    run_loops(ours, theirs, stochastic=True, learned=variance_type.startswith("learned"))


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("beta_schedule", BETA_SCHEDULES)
def test_alphas_cumprod_match_unmodified_diffusers(beta_schedule, rescale):
    ours = DDPMScheduler(DDPMConfig(beta_schedule=beta_schedule, rescale_betas_zero_snr=rescale))
    theirs = diffusers.DDPMScheduler(beta_schedule=beta_schedule, rescale_betas_zero_snr=rescale)
    assert ours.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("cls", ["ddim", "ddpm"])
def test_sd15_loop_matches_unmodified_diffusers(cls, spacing):
    config = {**SD15_SCHEDULER_CONFIG, "timestep_spacing": spacing}
    theirs = (diffusers.DDIMScheduler if cls == "ddim" else diffusers.DDPMScheduler).from_config(config)
    step_kwargs = {"eta": 0.6} if cls == "ddim" else {}
    loose = {"rtol": 1e-3, "atol": 1e-4}
    run_loops(from_config(config, cls), theirs, True, float64_schedule=False, tol=loose, **step_kwargs)


@pytest.mark.parametrize("cls", ["ddim", "ddpm"])
def test_add_noise_matches_diffusers(cls):
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    timesteps = np.array([3, 871], dtype=np.int64)
    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    ours = from_config(config, cls)
    theirs = (diffusers.DDIMScheduler if cls == "ddim" else diffusers.DDPMScheduler).from_config(config)
    want = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(timesteps)).numpy()
    got = ours.add_noise(x0, noise, timesteps)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    want_scalar = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.tensor([500] * 2)).numpy()
    np.testing.assert_allclose(ours.add_noise(x0, noise, 500), want_scalar, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("short", "theirs_cls"), [("ddim", "DDIMScheduler"), ("ddpm", "DDPMScheduler")])
def test_from_config_of_a_foreign_class_matches_diffusers(short, theirs_cls):
    ours = from_config(SD15_SCHEDULER_CONFIG, short)
    theirs = getattr(diffusers, theirs_cls).from_config(SD15_SCHEDULER_CONFIG)
    ours_dict = ours.config.to_dict()
    assert ours_dict["_class_name"] == theirs_cls
    for key, value in ours_dict.items():
        if not key.startswith("_"):
            assert theirs.config[key] == value, key
    theirs_fields = set(inspect.signature(type(theirs).__init__).parameters) - {"self"}
    assert set(ours_dict) - {"_class_name"} == theirs_fields
    np.testing.assert_allclose(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=1e-6)
    if short == "ddim":
        assert ours.final_alpha_cumprod == pytest.approx(float(theirs.final_alpha_cumprod), rel=1e-6)
    for steps in (1, 7, 50, 999):
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
        np.testing.assert_array_equal(ours.timesteps, theirs.timesteps.numpy())


def test_timesteps_match_diffusers_for_every_step_count():
    """All three spacings, n = 1..T for a small T (diffusers' trailing grid is right for these n)."""
    for spacing, offset in itertools.product(SPACINGS, (0, 1)):
        ours = DDIMScheduler(DDIMConfig(num_train_timesteps=100, timestep_spacing=spacing, steps_offset=offset))
        theirs = diffusers.DDIMScheduler(num_train_timesteps=100, timestep_spacing=spacing, steps_offset=offset)
        for n in range(1, 100 if offset else 101):
            theirs.set_timesteps(n)
            if len(theirs.timesteps) != n:  # diffusers' extra trailing -1 (see test_schedulers)
                continue
            ours.set_timesteps(n)
            np.testing.assert_array_equal(ours.timesteps, theirs.timesteps.numpy(), err_msg=f"{spacing} n={n}")
