"""Closed-form oracle tests for difftrt.schedulers; NumPy only (no torch, no diffusers).

Expected values come from the papers' formulas written out here, or from hand-checked literals, never from
the code under test. DDPM: Ho et al. 2020 (eq. 7); DDIM: Song et al. 2021 (eqs. 9, 12, 16).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from difftrt.errors import ConfigError, UsageError
from difftrt.schedulers import SCHEDULERS, DDIMConfig, DDIMScheduler, DDPMConfig, DDPMScheduler, from_config
from difftrt.schedulers.base import threshold_sample
from difftrt.schedulers.betas import make_betas, make_timesteps, rescale_zero_terminal_snr

SHAPE = (2, 3, 4, 4)


def linear_alpha_bar(num_train_timesteps: int = 1000, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    """ᾱ_t of DDPM's linear schedule, written out with a plain loop."""
    out, prod = [], 1.0
    for i in range(num_train_timesteps):
        prod *= 1.0 - (start + (end - start) * i / (num_train_timesteps - 1))
        out.append(prod)
    return np.array(out)


ALPHA_BAR = linear_alpha_bar()


def gaussians(seed: int, count: int, dtype=np.float64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(dtype) for _ in range(count)]


# --- betas -----------------------------------------------------------------------------------------------------


def test_linear_betas_are_evenly_spaced_between_the_endpoints():
    betas = make_betas("linear", 1000, 1e-4, 0.02)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15) and betas[-1] == pytest.approx(0.02, abs=1e-15)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) / 999, rtol=1e-9)


def test_scaled_linear_betas_have_evenly_spaced_square_roots():
    betas = make_betas("scaled_linear", 1000, 0.00085, 0.012)
    root = np.sqrt(betas)
    assert root[0] == pytest.approx(math.sqrt(0.00085)) and root[-1] == pytest.approx(math.sqrt(0.012))
    np.testing.assert_allclose(np.diff(root), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999, rtol=1e-9)


def test_cosine_betas_follow_the_alpha_bar_ratio_capped_at_0_999():
    def alpha_bar(tau: float) -> float:
        return math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2

    big_t = 1000
    expected = [min(1 - alpha_bar((i + 1) / big_t) / alpha_bar(i / big_t), 0.999) for i in range(big_t)]
    betas = make_betas("squaredcos_cap_v2", big_t)
    np.testing.assert_allclose(betas, expected, rtol=1e-12)
    assert betas[-1] == 0.999 and betas[:-1].max() < 0.999


def test_trained_betas_are_used_verbatim_and_must_match_num_train_timesteps():
    np.testing.assert_array_equal(make_betas("linear", 3, trained_betas=[0.1, 0.2, 0.3]), [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="trained_betas"):
        make_betas("linear", 4, trained_betas=[0.1, 0.2, 0.3])


def test_zero_terminal_snr_rescaling():
    betas = make_betas("scaled_linear", 1000, 0.00085, 0.012)
    before = np.cumprod(1 - betas)
    after = np.cumprod(1 - rescale_zero_terminal_snr(betas))
    assert after[-1] == 0.0
    assert after[0] == pytest.approx(before[0], rel=1e-12)
    slope, intercept = np.polyfit(np.sqrt(before), np.sqrt(after), 1)  # algorithm 1: sqrt(ᾱ) mapped affinely
    np.testing.assert_allclose(slope * np.sqrt(before) + intercept, np.sqrt(after), atol=1e-12)


# --- timesteps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spacing", "steps", "offset", "expected"),
    [
        ("leading", 10, 0, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
        ("leading", 10, 1, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
        ("trailing", 10, 0, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
        ("trailing", 10, 1, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),  # offset: leading only
        ("linspace", 10, 0, [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]),
        ("leading", 3, 0, [666, 333, 0]),
        ("trailing", 3, 0, [999, 666, 332]),  # round(1000 - k·333.3) - 1
        ("linspace", 3, 0, [999, 500, 0]),  # 499.5 rounds half to even
    ],
)
def test_timesteps(spacing, steps, offset, expected):
    timesteps = make_timesteps(spacing, steps, 1000, offset)
    assert timesteps.dtype == np.int64
    np.testing.assert_array_equal(timesteps, expected)


def test_trailing_never_yields_an_extra_negative_timestep():
    # diffusers' np.arange(1000, 0, -1000/61) has 62 values, the last rounding to timestep -1.
    timesteps = make_timesteps("trailing", 61, 1000)
    assert len(timesteps) == 61 and timesteps[0] == 999 and timesteps.min() >= 0
    assert np.all(np.diff(timesteps) < 0)


@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_set_timesteps_out_of_range(steps):
    for cls in (DDIMScheduler, DDPMScheduler):
        with pytest.raises(UsageError, match="num_inference_steps"):
            cls().set_timesteps(steps)


def test_set_timesteps_all_steps_and_offset_past_the_end():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(1000)
    np.testing.assert_array_equal(scheduler.timesteps, np.arange(999, -1, -1))
    with pytest.raises(UsageError, match="steps_offset"):
        DDIMScheduler(DDIMConfig(steps_offset=1)).set_timesteps(1000)


# --- forward process -------------------------------------------------------------------------------------------


def test_add_noise_moments():
    n = 200_000
    timesteps = np.array([10, 500, 990])
    x0 = np.array([0.7, -1.3, 2.0])[:, None] * np.ones((3, n))
    x_t = DDPMScheduler().add_noise(x0, np.random.default_rng(0).standard_normal((3, n)), timesteps)
    for row, t in enumerate(timesteps):
        a = ALPHA_BAR[t]
        mean_tol = 5 * math.sqrt((1 - a) / n)  # 5 standard errors of the mean
        var_tol = 5 * (1 - a) * math.sqrt(2 / (n - 1))  # 5 standard errors of a Gaussian sample variance
        assert abs(x_t[row].mean() - math.sqrt(a) * x0[row, 0]) < mean_tol
        assert abs(x_t[row].var(ddof=1) - (1 - a)) < var_tol


def test_add_noise_broadcasts_one_timestep_per_row_and_keeps_dtype():
    x0, noise = gaussians(1, 2, np.float32)
    scheduler = DDIMScheduler()
    out = scheduler.add_noise(x0, noise, np.array([3, 700]))
    assert out.dtype == np.float32
    for row, t in enumerate([3, 700]):
        want = math.sqrt(ALPHA_BAR[t]) * x0[row] + math.sqrt(1 - ALPHA_BAR[t]) * noise[row]
        np.testing.assert_allclose(out[row], want, rtol=1e-6, atol=1e-6)
    want = math.sqrt(ALPHA_BAR[42]) * x0 + math.sqrt(1 - ALPHA_BAR[42]) * noise
    np.testing.assert_allclose(scheduler.add_noise(x0, noise, 42), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(UsageError):
        scheduler.add_noise(x0, noise, np.array([0, 1000]))


# --- DDIM ------------------------------------------------------------------------------------------------------


def exact_model(prediction: str, x0: np.ndarray, alpha_bar: np.ndarray = ALPHA_BAR):
    """A model that knows x_0: returns the true eps / v / x_0 of whatever x_t it is given."""

    def model(x_t: np.ndarray, t: int) -> np.ndarray:
        a = alpha_bar[t]
        eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
        outputs = {"epsilon": eps, "v_prediction": math.sqrt(a) * eps - math.sqrt(1 - a) * x0, "sample": x0}
        return outputs[prediction].astype(x_t.dtype)

    return model


@pytest.mark.parametrize(("spacing", "big_t"), [("leading", 1000), ("trailing", 1000), ("leading", 500)])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddim_eta0_with_an_exact_model_stays_on_the_trajectory_and_recovers_x0(prediction, spacing, big_t):
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    eps = rng.standard_normal(SHAPE).astype(np.float32)
    alpha_bar = linear_alpha_bar(big_t)
    config = DDIMConfig(num_train_timesteps=big_t, prediction_type=prediction, timestep_spacing=spacing)
    scheduler = DDIMScheduler(config)
    scheduler.set_timesteps(10)
    model = exact_model(prediction, x0, alpha_bar)
    t0 = int(scheduler.timesteps[0])
    x = (math.sqrt(alpha_bar[t0]) * x0 + math.sqrt(1 - alpha_bar[t0]) * eps).astype(np.float32)
    for t in scheduler.timesteps:
        out = scheduler.step(model(x, int(t)), t, x)
        prev = int(t) - big_t // 10  # DDIM steps back by T // n
        a_prev = alpha_bar[prev] if prev >= 0 else 1.0  # set_alpha_to_one
        np.testing.assert_allclose(out.prev_sample, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps, atol=1e-5)
        x = out.prev_sample
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, x0, atol=1e-5)


def test_ddim_stochastic_step_follows_eqs_9_12_16():
    x_t, eps, z = gaussians(3, 3)
    scheduler = DDIMScheduler(DDIMConfig(clip_sample=False))
    scheduler.set_timesteps(10)
    eta, a_t, a_prev = 0.7, ALPHA_BAR[500], ALPHA_BAR[400]
    out = scheduler.step(eps, 500, x_t, variance_noise=z, eta=eta)
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)  # eq. 9
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)  # eq. 16
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z  # eq. 12
    np.testing.assert_allclose(out.pred_original_sample, x0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.prev_sample, expected, rtol=1e-12, atol=1e-12)


def test_ddim_eta1_is_the_ddpm_posterior_step():
    x_t, eps, z = gaussians(4, 3)
    ddim, ddpm = DDIMScheduler(DDIMConfig(clip_sample=False)), DDPMScheduler(DDPMConfig(clip_sample=False))
    ddim.set_timesteps(10)
    ddpm.set_timesteps(10)
    got = ddim.step(eps, 600, x_t, variance_noise=z, eta=1.0).prev_sample
    np.testing.assert_allclose(got, ddpm.step(eps, 600, x_t, variance_noise=z).prev_sample, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("cls", "kwargs"), [(DDIMScheduler, {"eta": 0.5}), (DDPMScheduler, {})])
def test_variance_noise_and_generator_make_steps_reproducible(cls, kwargs):
    x_t, eps, z = gaussians(5, 3, np.float32)
    scheduler = cls()
    scheduler.set_timesteps(10)

    def step(**noise) -> np.ndarray:
        return scheduler.step(eps, 500, x_t, **kwargs, **noise).prev_sample

    np.testing.assert_array_equal(step(variance_noise=z), step(variance_noise=z))
    assert not np.allclose(step(variance_noise=z), step(variance_noise=-z))
    np.testing.assert_array_equal(step(generator=np.random.default_rng(9)), step(generator=np.random.default_rng(9)))
    with pytest.raises(UsageError, match="not both"):
        step(variance_noise=z, generator=np.random.default_rng(0))
    with pytest.raises(UsageError, match="shape"):
        step(variance_noise=z[:1])


def test_eta0_ignores_variance_noise():
    x_t, eps, z = gaussians(5, 3, np.float32)
    ddim = DDIMScheduler()
    ddim.set_timesteps(10)
    np.testing.assert_array_equal(
        ddim.step(eps, 500, x_t).prev_sample, ddim.step(eps, 500, x_t, variance_noise=z).prev_sample
    )


def test_clipping_thresholding_and_use_clipped_model_output():
    x_t = gaussians(6, 1)[0]
    three = np.full(SHAPE, 3.0)
    a_t, a_prev = ALPHA_BAR[500], ALPHA_BAR[400]

    def step(use_clipped: bool = False, **config) -> np.ndarray:
        scheduler = DDIMScheduler(DDIMConfig(prediction_type="sample", **config))
        scheduler.set_timesteps(10)
        return scheduler.step(three, 500, x_t, use_clipped_model_output=use_clipped)

    assert np.all(step(clip_sample_range=2.0).pred_original_sample == 2.0)
    assert np.all(step(clip_sample=False).pred_original_sample == 3.0)
    assert np.allclose(step(thresholding=True, sample_max_value=2.5, clip_sample_range=0.1).pred_original_sample, 1.0)
    for use_clipped, x0_for_eps in ((False, 3.0), (True, 1.0)):  # diffusers derives eps before clipping
        eps = (x_t - math.sqrt(a_t) * x0_for_eps) / math.sqrt(1 - a_t)
        want = math.sqrt(a_prev) * 1.0 + math.sqrt(1 - a_prev) * eps
        np.testing.assert_allclose(step(use_clipped).prev_sample, want, rtol=1e-12)


def test_dynamic_thresholding_hand_example():
    x0 = np.array([0.5, -3.0, 2.0, 1.0, 0.1, 0.2, -0.3, 0.4]).reshape(2, 1, 1, 4)
    # row 0: |x| sorted 0.5 1 2 3, 99.5% quantile = 2 + 0.985 = 2.985 -> s = min(2.985, 2.5); row 1: s = max(q, 1) = 1
    want = np.array([0.2, -1.0, 0.8, 0.4, 0.1, 0.2, -0.3, 0.4]).reshape(2, 1, 1, 4)
    np.testing.assert_allclose(threshold_sample(x0, 0.995, 2.5), want, rtol=1e-12)
    half = threshold_sample(x0[:1], 0.5, 2.5)  # median of 0.5 1 2 3 = 1.5
    np.testing.assert_allclose(half.ravel(), [0.5 / 1.5, -1.0, 1.0, 1.0 / 1.5], rtol=1e-12)
    assert threshold_sample(x0.astype(np.float32), 0.995, 2.5).dtype == np.float32


# --- DDPM ------------------------------------------------------------------------------------------------------


def posterior(a_t: float, a_prev: float, x_t: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, float, float]:
    """DDPM eq. 7: (μ̃_t, β_t, β̃_t) with β_t = 1 − ᾱ_t/ᾱ_{t'} for a step from t to t'."""
    beta = 1 - a_t / a_prev
    mean = math.sqrt(a_prev) * beta / (1 - a_t) * x0 + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t) * x_t
    return mean, beta, (1 - a_prev) / (1 - a_t) * beta


@pytest.mark.parametrize("respaced", [False, True])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"])
def test_ddpm_step_is_the_posterior_mean_plus_fixed_noise(variance_type, respaced):
    x_t, eps, z = gaussians(7, 3)
    scheduler = DDPMScheduler(DDPMConfig(clip_sample=False, variance_type=variance_type))
    if respaced:
        scheduler.set_timesteps(10)  # 500 -> 400
    prev = 400 if respaced else 499
    a_t, a_prev = ALPHA_BAR[500], ALPHA_BAR[prev]
    if not respaced:  # the full chain's β_t is the schedule's own
        assert 1 - a_t / a_prev == pytest.approx(1e-4 + (0.02 - 1e-4) * 500 / 999, rel=1e-9)
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    mean, beta, beta_tilde = posterior(a_t, a_prev, x_t, x0)
    variance = beta_tilde if variance_type.startswith("fixed_small") else beta
    out = scheduler.step(eps, 500, x_t, variance_noise=z)
    np.testing.assert_allclose(out.prev_sample, mean + math.sqrt(variance) * z, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_ddpm_learned_variances(variance_type):
    x_t, eps, z = gaussians(8, 3)
    v = 0.4 * np.tanh(x_t) + 0.5  # in (0.1, 0.9): a variance for "learned", a weight for "learned_range"
    scheduler = DDPMScheduler(DDPMConfig(clip_sample=False, variance_type=variance_type))
    scheduler.set_timesteps(10)
    a_t, a_prev = ALPHA_BAR[500], ALPHA_BAR[400]
    mean, beta, beta_tilde = posterior(a_t, a_prev, x_t, (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t))
    if variance_type == "learned":
        std = np.sqrt(v)  # diffusers reads these channels as the variance itself
    else:  # Improved DDPM eq. 15 with v mapped from [-1, 1] to [0, 1]
        frac = (v + 1) / 2
        std = np.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(beta_tilde)))
    out = scheduler.step(np.concatenate([eps, v], axis=1), 500, x_t, variance_noise=z)
    np.testing.assert_allclose(out.prev_sample, mean + std * z, rtol=1e-10, atol=1e-12)
    with pytest.raises(UsageError, match=r"\(B, 6, "):
        scheduler.step(eps, 500, x_t, variance_noise=z)


def test_ddpm_last_step_adds_no_noise_and_returns_x0():
    x_t, eps, z = gaussians(9, 3)
    out = DDPMScheduler(DDPMConfig(clip_sample=False)).step(eps, 0, x_t, variance_noise=100 * z)
    np.testing.assert_allclose(out.prev_sample, out.pred_original_sample, rtol=1e-12)
    np.testing.assert_allclose(out.prev_sample, (x_t - math.sqrt(1e-4) * eps) / math.sqrt(1 - 1e-4), rtol=1e-12)


@pytest.mark.parametrize("cls", [DDIMScheduler, DDPMScheduler])
def test_protocol_attributes_and_dtypes(cls):
    scheduler = cls()
    assert len(scheduler) == 1000 and scheduler.init_noise_sigma == 1.0 and scheduler.num_inference_steps is None
    assert scheduler.alphas_cumprod.dtype == np.float64
    np.testing.assert_allclose(scheduler.alphas_cumprod, ALPHA_BAR, rtol=1e-12)
    scheduler.set_timesteps(5)
    assert scheduler.num_inference_steps == 5 and scheduler.timesteps.dtype == np.int64
    for dtype in (np.float32, np.float64):
        x_t, eps = gaussians(10, 2, dtype)
        assert scheduler.scale_model_input(x_t, 800) is x_t
        out = scheduler.step(eps, scheduler.timesteps[0], x_t, generator=np.random.default_rng(0))
        assert out.prev_sample.dtype == dtype and out.pred_original_sample.dtype == dtype


def test_step_misuse_raises_usage_errors():
    x_t, eps = gaussians(11, 2)
    with pytest.raises(UsageError, match="set_timesteps"):
        DDIMScheduler().step(eps, 500, x_t)
    ddim, ddpm = DDIMScheduler(), DDPMScheduler()
    ddim.set_timesteps(10)
    ddpm.set_timesteps(10)
    with pytest.raises(UsageError, match="eta"):
        ddim.step(eps, 500, x_t, eta=1.5)
    with pytest.raises(UsageError, match="eta"):
        ddpm.step(eps, 500, x_t, eta=0.5)
    with pytest.raises(UsageError, match=r"\.timesteps"):
        ddpm.step(eps, 501, x_t)
    with pytest.raises(UsageError, match="timestep"):
        ddim.step(eps, 1000, x_t)


# --- config ----------------------------------------------------------------------------------------------------

DIFFUSERS_DEFAULTS = {  # from the DDIMScheduler / DDPMScheduler __init__ signatures of diffusers 0.42
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "clip_sample": True, "clip_sample_range": 1.0, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}  # fmt: skip


def test_from_config_defaults_ignored_keys_and_round_trip():
    ddim = from_config({"_class_name": "DDIMScheduler", "_diffusers_version": "0.6.0", "skip_prk_steps": True})
    assert isinstance(ddim, DDIMScheduler)
    assert ddim.config.to_dict() == {"_class_name": "DDIMScheduler", **DIFFUSERS_DEFAULTS, "set_alpha_to_one": True}
    ddpm = from_config({"_class_name": "DDPMScheduler", "variance_type": "learned_range", "trained_betas": None})
    want = {"_class_name": "DDPMScheduler", **DIFFUSERS_DEFAULTS, "variance_type": "learned_range"}
    assert ddpm.config.to_dict() == want
    for scheduler in (ddim, ddpm):
        round_tripped = json.loads(json.dumps(scheduler.config.to_dict()))
        assert type(scheduler).from_config(round_tripped).config == scheduler.config


def test_class_name_overrides_the_config_class():
    config = {"_class_name": "KDPM2DiscreteScheduler", "steps_offset": 1, "set_alpha_to_one": False}
    assert SCHEDULERS["ddim"] is DDIMScheduler and SCHEDULERS["ddpm"] is DDPMScheduler
    assert isinstance(from_config(config, "ddim"), DDIMScheduler)
    assert isinstance(from_config(config, "DDPMScheduler"), DDPMScheduler)
    assert from_config(config, "ddim").config.steps_offset == 1
    with pytest.raises(ConfigError, match=r"unsupported scheduler 'KDPM2DiscreteScheduler'.*; supported: ddim, ddpm"):
        from_config(config)
    with pytest.raises(ConfigError, match="_class_name"):
        from_config({})
    with pytest.raises(ConfigError, match="supported: ddim"):
        from_config(config, "euler-karras")


@pytest.mark.parametrize(
    ("key", "supported"),
    [
        ("beta_schedule", "linear, scaled_linear, squaredcos_cap_v2"),
        ("prediction_type", "epsilon, v_prediction, sample"),
        ("timestep_spacing", "leading, trailing, linspace"),
        ("variance_type", "fixed_small, fixed_small_log, fixed_large, fixed_large_log, learned, learned_range"),
    ],
)
def test_unknown_option_values_list_the_supported_ones(key, supported):
    with pytest.raises(ConfigError, match=f"unknown {key} 'bogus'; supported: {supported}"):
        from_config({key: "bogus"}, "ddpm")
    with pytest.raises(ConfigError, match="num_train_timesteps"):
        DDIMConfig(num_train_timesteps=0)


def test_importing_the_schedulers_leaves_torch_out():
    code = "import sys, difftrt.schedulers; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
