"""Closed-form oracle tests for Euler, Euler-a, LMS, Heun, DPM-Solver++ and PNDM; NumPy only (no torch, no diffusers).

Expected values come from the papers' formulas written out here (Karras et al. 2022 EDM eq. 5 and algorithms 1–2;
Lu et al. 2022 DPM-Solver++ algorithm 2; Liu et al. 2022 PNDM), never from the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from difftrt.errors import ConfigError, UsageError
from difftrt.schedulers import SCHEDULERS, from_config
from difftrt.schedulers.lms import lms_coefficients
from difftrt.schedulers.pndm import plms_combination
from difftrt.schedulers.sigmas import karras_sigmas
from tests.test_schedulers import ALPHA_BAR, gaussians

SIGMA = np.sqrt((1 - ALPHA_BAR) / ALPHA_BAR)  # σ_t of the linear schedule, from test_schedulers' own loop
NEW = ["euler", "euler-a", "dpm++2m", "lms", "pndm", "heun"]
SIGMA_FAMILY = ["euler", "euler-a", "dpm++2m", "lms", "heun"]
VP_STATE = {"dpm++2m", "pndm"}  # these carry x_t = sqrt(ᾱ)·x_0 + sqrt(1 − ᾱ)·eps; the others x_0 + σ·eps


def make(short: str, steps: int = 10, **config):
    """``short`` on DDPM's linear β (Heun's own default is Stable Diffusion's), set to ``steps``."""
    scheduler = from_config({"beta_start": 1e-4, "beta_end": 0.02, **config}, short)
    scheduler.set_timesteps(steps)
    return scheduler


# --- σ grids ---------------------------------------------------------------------------------------------------


def test_sigma_grid_is_sigma_t_at_the_timesteps_then_zero():
    euler = make("euler", 10, timestep_spacing="leading")
    np.testing.assert_array_equal(euler.timesteps, np.arange(900, -1, -100))
    np.testing.assert_allclose(euler.sigmas, [*SIGMA[900::-100], 0.0], rtol=1e-12)
    assert euler.init_noise_sigma == pytest.approx(math.sqrt(SIGMA[900] ** 2 + 1))  # "leading": sqrt(σ² + 1)
    fractional = make("euler", 7)  # linspace(0, 999, 7) = 999, 832.5, ...: σ linear in t between neighbours
    assert fractional.timesteps[1] == 832.5 and fractional.init_noise_sigma == pytest.approx(SIGMA[999])
    assert fractional.sigmas[1] == pytest.approx((SIGMA[832] + SIGMA[833]) / 2, rel=1e-12)
    assert make("euler", 10, final_sigmas_type="sigma_min").sigmas[-1] == pytest.approx(SIGMA[0])


def test_karras_sigmas_follow_edm_eq_5():
    sigmas = karras_sigmas(0.03, 14.6, 12)
    assert sigmas[0] == pytest.approx(14.6, rel=1e-12) and sigmas[-1] == pytest.approx(0.03, rel=1e-12)
    np.testing.assert_allclose(np.diff(sigmas ** (1 / 7)), (0.03 ** (1 / 7) - 14.6 ** (1 / 7)) / 11, rtol=1e-9)
    euler = make("euler", 12, use_karras_sigmas=True)
    assert euler.sigmas[0] == pytest.approx(SIGMA[999]) and euler.sigmas[-2] == pytest.approx(SIGMA[0])
    assert euler.sigmas[-1] == 0.0
    # each timestep is where log σ_t, linear in t between integers, reaches that σ
    log_sigma_at_t = np.interp(euler.timesteps.astype(np.float64), np.arange(1000), np.log(SIGMA))
    np.testing.assert_allclose(log_sigma_at_t, np.log(euler.sigmas[:-1]), atol=1e-5)
    dpm = make("dpm++2m", 12, use_karras_sigmas=True)  # integer timesteps: the rounded fractional ones
    np.testing.assert_array_equal(dpm.timesteps, np.round(euler.timesteps.astype(np.float64)))


# --- exact-oracle trajectories ---------------------------------------------------------------------------------


def oracle(prediction: str, x0: np.ndarray):
    """A model that knows x_0: the true eps / v / x_0 of the variance-preserving x_t it is fed at integer t."""

    def model(x_t: np.ndarray, t: float) -> np.ndarray:
        a = ALPHA_BAR[int(t)]
        eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a)
        return {"epsilon": eps, "v_prediction": math.sqrt(a) * eps - math.sqrt(1 - a) * x0, "sample": x0}[prediction]

    return model


# PNDM combines raw outputs across steps: exact for eps (constant along the trajectory), not for v
CASES = [(s, p) for s in NEW for p in ("epsilon", "v_prediction", "sample") if s != "pndm" or p == "epsilon"]


@pytest.mark.parametrize(("short", "prediction"), CASES)
def test_an_exact_model_keeps_every_scheduler_on_the_trajectory_and_recovers_x0(short, prediction):
    """Every method is exact when x̂_0 is: x stays on x_0 + σ·eps (Euler, Heun, LMS: all derivatives are eps;
    DPM-Solver++: all divided differences vanish; PNDM: eps is constant), Euler-a on x_0 + σ·eps' with eps' fresh."""
    x0, eps = gaussians(20, 2)
    scheduler = make(short, 10, timestep_spacing="leading", prediction_type=prediction, set_alpha_to_one=True)
    model, t0 = oracle(prediction, x0), int(scheduler.timesteps[0])
    noise_level = math.sqrt(1 - ALPHA_BAR[t0]) if short in VP_STATE else SIGMA[t0]
    x = (math.sqrt(ALPHA_BAR[t0]) if short in VP_STATE else 1.0) * x0 + noise_level * eps
    rng = np.random.default_rng(0)
    for i, t in enumerate(scheduler.timesteps):
        out = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, generator=rng)
        np.testing.assert_allclose(out.pred_original_sample, x0, atol=1e-8)
        if short in ("euler", "lms") or (short == "heun" and i % 2 == 0):
            np.testing.assert_allclose(out.prev_sample, x0 + scheduler.sigmas[i + 1] * eps, atol=1e-8)
        x = out.prev_sample
    np.testing.assert_allclose(x, x0, atol=1e-8)


@pytest.mark.parametrize("strength", [0.3, 0.9, 1.0])
@pytest.mark.parametrize("short", list(SCHEDULERS))
def test_img2img_at_any_strength_recovers_x0_with_an_exact_model(short, strength):
    """diffusers' img2img recipe: t_start = n − min(int(n·s), n), set_begin_index(t_start·order), add_noise at
    the first kept timestep, loop over the rest. s = 0.9 begins PNDM between its repeated entries; diffusers' own
    PNDM and LMS miss x_0 here (module docs of pndm.py and lms.py)."""
    n, rng = 10, np.random.default_rng(0)
    x0, noise = gaussians(31, 2)
    config = {"timestep_spacing": "leading", "set_alpha_to_one": True, "clip_sample": False, "skip_prk_steps": True}
    scheduler = make(short, n, **config)
    begin = (n - min(int(n * strength), n)) * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    scheduler.set_begin_index(begin)
    x, model = scheduler.add_noise(x0, noise, timesteps[:1]), oracle("epsilon", x0)
    for t in timesteps:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, generator=rng).prev_sample
    np.testing.assert_allclose(x, x0, atol=1e-8)


# --- single steps against the papers' formulas -----------------------------------------------------------------


def test_lms_coefficients_integrate_the_lagrange_interpolant_exactly():
    assert lms_coefficients([2.0], 2.0, 1.5) == pytest.approx([-0.5])  # order 1: the Euler step σ_next − σ
    nodes, lo, hi = [3.0, 4.5, 6.0, 8.0], 3.0, 2.1
    coeffs = lms_coefficients(nodes, lo, hi)
    for p, integral in ((lambda s: 1.0, hi - lo), (lambda s: s**3 - 2 * s, (hi**4 - lo**4) / 4 - (hi**2 - lo**2))):
        assert sum(c * p(s) for c, s in zip(coeffs, nodes)) == pytest.approx(integral, rel=1e-12)
    x, eps = gaussians(21, 2)
    lms, euler = make("lms"), make("euler")
    t = lms.timesteps[0]
    np.testing.assert_allclose(lms.step(eps, t, x).prev_sample, euler.step(eps, t, x).prev_sample, rtol=1e-12)


def test_euler_ancestral_step_splits_the_next_sigma_into_a_deterministic_and_a_fresh_part():
    x, eps, z = gaussians(22, 3)
    scheduler = make("euler-a")
    s, s_next = scheduler.sigmas[0], scheduler.sigmas[1]
    up = math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2)
    down = math.sqrt(s_next**2 - up**2)
    out = scheduler.step(eps, scheduler.timesteps[0], x, variance_noise=z)
    np.testing.assert_allclose(out.prev_sample, x + eps * (down - s) + up * z, rtol=1e-12, atol=1e-12)
    last = make("euler-a", 1)  # σ_next = 0: no noise, the step lands on x̂_0
    out = last.step(eps, last.timesteps[0], x, variance_noise=100 * z)
    np.testing.assert_allclose(out.prev_sample, out.pred_original_sample, rtol=1e-12)


def test_euler_churn_follows_edm_algorithm_2():
    x, eps, z = gaussians(23, 3)
    scheduler = make("euler")
    s, s_next = scheduler.sigmas[0], scheduler.sigmas[1]
    gamma = min(0.5 / 10, math.sqrt(2) - 1)
    s_hat = s * (1 + gamma)
    x_hat = x + math.sqrt(s_hat**2 - s**2) * 0.9 * z
    want = x_hat + eps * (s_next - s_hat)  # d = (x̂ − (x̂ − σ̂·eps))/σ̂ = eps
    got = scheduler.step(eps, scheduler.timesteps[0], x, variance_noise=z, s_churn=0.5, s_noise=0.9).prev_sample
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    outside = make("euler")  # σ outside [s_tmin, s_tmax]: γ = 0, no noise used
    plain = outside.step(eps, outside.timesteps[0], x, variance_noise=z, s_churn=0.5, s_tmax=1.0).prev_sample
    np.testing.assert_allclose(plain, x + eps * (s_next - s), rtol=1e-12)


def test_heun_pair_is_the_second_order_taylor_step_of_a_linear_ode():
    """Feeding eps = λ·x makes dx/dσ = λ·x; one Heun pair gives x·(1 + z + z²/2), z = λ·(σ_1 − σ_0)."""
    x, lam = gaussians(24, 1)[0], -0.05
    heun = make("heun", 4)
    assert heun.order == 2 and len(heun.timesteps) == 7 and heun.timesteps[1] == heun.timesteps[2]
    z = lam * (heun.sigmas[1] - heun.sigmas[0])
    euler_point = heun.step(lam * x, heun.timesteps[0], x).prev_sample
    np.testing.assert_allclose(euler_point, x * (1 + z), rtol=1e-12)
    corrected = heun.step(lam * euler_point, heun.timesteps[1], euler_point).prev_sample
    np.testing.assert_allclose(corrected, x * (1 + z + z**2 / 2), rtol=1e-12)


def test_dpm_solver_2m_follows_algorithm_2_and_its_first_step_is_ddim():
    x, eps0, eps1 = gaussians(25, 3)
    dpm = make("dpm++2m", 10, timestep_spacing="leading")
    t0, t1, t2 = (int(t) for t in dpm.timesteps[:3])
    alpha, sigma = np.sqrt(ALPHA_BAR), np.sqrt(1 - ALPHA_BAR)
    lam = np.log(alpha / sigma)
    x0_0 = (x - sigma[t0] * eps0) / alpha[t0]
    x1 = dpm.step(eps0, t0, x).prev_sample
    np.testing.assert_allclose(x1, alpha[t1] * x0_0 + sigma[t1] * eps0, rtol=1e-10)  # DDIM, η = 0
    x0_1 = (x1 - sigma[t1] * eps1) / alpha[t1]
    h, r = lam[t2] - lam[t1], (lam[t1] - lam[t0]) / (lam[t2] - lam[t1])
    d = (1 + 1 / (2 * r)) * x0_1 - 1 / (2 * r) * x0_0
    want = sigma[t2] / sigma[t1] * x1 - alpha[t2] * (math.exp(-h) - 1) * d
    np.testing.assert_allclose(dpm.step(eps1, t1, x1).prev_sample, want, rtol=1e-10)


def test_plms_weights_are_adams_bashforth_and_the_pndm_transfer_is_ddim():
    """Σ_j w_j·p(−j) = ∫_0^1 p for polynomials p of degree < k: k outputs extrapolate over the next stride."""
    for k, p, integral in ((2, lambda s: 3 * s + 1, 2.5), (3, lambda s: s * s, 1 / 3), (4, lambda s: s**3 - s, -0.25)):
        ets = [np.array(p(-j)) for j in reversed(range(k))]  # newest last
        assert float(plms_combination(ets)) == pytest.approx(integral, rel=1e-12)
    x, eps = gaussians(26, 2)
    pndm = make("pndm", 10, skip_prk_steps=True)
    assert list(pndm.timesteps[:3]) == [900, 800, 800]  # the first step is a predictor–corrector pair
    a_t, a_prev = ALPHA_BAR[900], ALPHA_BAR[800]
    x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    np.testing.assert_allclose(pndm.step(eps, 900, x).prev_sample, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps,
                               rtol=1e-10)  # fmt: skip


# --- protocol --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("short", NEW)
def test_order_begin_index_and_dtypes(short):
    scheduler = make(short, skip_prk_steps=True)
    assert scheduler.order == (2 if short == "heun" else 1)
    scheduler.set_begin_index(4)
    assert scheduler.begin_index == 4
    with pytest.raises(UsageError, match="begin_index"):
        scheduler.set_begin_index(len(scheduler.timesteps))
    scheduler.set_timesteps(10)
    assert scheduler.begin_index is None
    for dtype in (np.float32, np.float64):
        fresh = make(short)
        x, eps = gaussians(27, 2, dtype)
        t = fresh.timesteps[0]
        out = fresh.step(eps, t, fresh.scale_model_input(x, t), generator=np.random.default_rng(0))
        assert out.prev_sample.dtype == dtype and out.pred_original_sample.dtype == dtype


@pytest.mark.parametrize("short", SIGMA_FAMILY)
def test_add_noise_uses_sigma_at_the_begin_index_or_looked_up(short):
    x0, noise = gaussians(28, 2, np.float32)
    scheduler = make(short)
    t = scheduler.timesteps[6]
    by_lookup = scheduler.add_noise(x0, noise, np.array([t, t]))
    scheduler.set_begin_index(6)  # img2img: the begin index decides, whatever timestep is passed
    np.testing.assert_array_equal(scheduler.add_noise(x0, noise, np.array([0, 0])), by_lookup)
    sigma = scheduler.sigmas[6]
    if short == "dpm++2m":  # variance preserving: α·x_0 + α·σ·noise with α = 1/sqrt(1 + σ²)
        want = (x0 + sigma * noise) / math.sqrt(1 + sigma**2)
    else:
        want = x0 + sigma * noise
    np.testing.assert_allclose(by_lookup, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("short", NEW)
def test_step_misuse_raises_usage_errors(short):
    x, eps = gaussians(29, 2)
    scheduler = make(short, 4)
    with pytest.raises(UsageError, match="eta"):
        scheduler.step(eps, scheduler.timesteps[0], x, eta=0.5)
    with pytest.raises(UsageError, match="timestep"):
        scheduler.step(eps, 1000.0, x)
    if short != "pndm":  # PNDM steps by timestep value, like DDIM
        for t in scheduler.timesteps:
            x = scheduler.step(eps, t, x, generator=np.random.default_rng(0)).prev_sample
        with pytest.raises(UsageError, match="set_timesteps"):
            scheduler.step(eps, scheduler.timesteps[-1], x)
    with pytest.raises(UsageError, match="num_inference_steps"):
        scheduler.set_timesteps(1001)


def test_stochastic_steps_are_reproducible_from_noise_or_generator():
    x, eps, z = gaussians(30, 3)
    for short, config in (("euler-a", {}), ("dpm++2m", {"algorithm_type": "sde-dpmsolver++"})):
        def step(**noise) -> np.ndarray:
            scheduler = make(short, **config)
            return scheduler.step(eps, scheduler.timesteps[0], x, **noise).prev_sample

        np.testing.assert_array_equal(step(variance_noise=z), step(variance_noise=z))
        assert not np.allclose(step(variance_noise=z), step(variance_noise=-z))
        drawn = step(generator=np.random.default_rng(3))
        np.testing.assert_array_equal(drawn, step(generator=np.random.default_rng(3)))
        with pytest.raises(UsageError, match="shape"):
            step(variance_noise=z[:1])


# --- config ----------------------------------------------------------------------------------------------------


def test_unknown_scheduler_lists_every_supported_one():
    listed = ("ddim, ddpm, euler, euler-a, dpm\\+\\+2m, lms, pndm, heun, unipc, DDIMScheduler, "
              ".*UniPCMultistepScheduler")
    with pytest.raises(ConfigError, match=f"unsupported scheduler 'DEISMultistepScheduler'.*; supported: {listed}"):
        from_config({"_class_name": "DEISMultistepScheduler"})
    for short, cls in SCHEDULERS.items():
        assert isinstance(from_config({"_class_name": cls.config_class.class_name}), cls)
        assert isinstance(from_config({"_class_name": "PNDMScheduler", "skip_prk_steps": True}, short), cls)


@pytest.mark.parametrize("short", NEW)
@pytest.mark.parametrize(
    ("key", "supported"),
    [("beta_schedule", "linear, scaled_linear, squaredcos_cap_v2"),
     ("prediction_type", "epsilon, v_prediction, sample"), ("timestep_spacing", "leading, trailing, linspace")],
)  # fmt: skip
def test_unknown_option_values_list_the_supported_ones(short, key, supported):
    with pytest.raises(ConfigError, match=f"unknown {key} 'bogus'; supported: {supported}"):
        from_config({key: "bogus"}, short)


@pytest.mark.parametrize(
    ("short", "config", "match"),
    [
        ("euler", {"use_beta_sigmas": True}, "use_beta_sigmas=True is not supported.*supported: False"),
        ("euler", {"interpolation_type": "log_linear"}, "interpolation_type='log_linear'.*supported: 'linear'"),
        ("euler", {"timestep_type": "continuous"}, "timestep_type='continuous'.*supported: 'discrete'"),
        ("euler", {"use_karras_sigmas": True, "use_exponential_sigmas": True}, "exclusive"),
        ("dpm++2m", {"algorithm_type": "dpmsolver"}, "unknown algorithm_type 'dpmsolver'; supported: dpmsolver\\+\\+"),
        ("dpm++2m", {"solver_order": 4}, "solver_order=4.*supported: 1, 2, 3"),
        ("dpm++2m", {"use_lu_lambdas": True}, "use_lu_lambdas"),
        ("pndm", {"prediction_type": "sample"}, "prediction_type='sample'.*supported: 'epsilon', 'v_prediction'"),
        ("lms", {"final_sigmas_type": "sigma_min", "use_beta_sigmas": True}, "use_beta_sigmas"),
    ],
)
def test_unsupported_option_values_are_config_errors(short, config, match):
    with pytest.raises(ConfigError, match=match):
        make(short, **config)


def test_pndm_runge_kutta_needs_four_steps_and_the_first_entry():
    with pytest.raises(UsageError, match="at least 4 steps"):
        make("pndm", 3)
    prk = make("pndm", 4, skip_prk_steps=False)
    assert len(prk.timesteps) == 12 + 1
    with pytest.raises(UsageError, match="skip_prk_steps=True"):
        prk.set_begin_index(2)


@pytest.mark.parametrize("short", NEW)
def test_configs_round_trip_through_json_and_dpm_takes_diffusers_aliases(short):
    scheduler = make(short, use_karras_sigmas=True, steps_offset=1)
    round_tripped = json.loads(json.dumps(scheduler.config.to_dict()))
    assert round_tripped["_class_name"] == type(scheduler).__name__
    assert type(scheduler).from_config(round_tripped).config == scheduler.config
    dpm = from_config({"algorithm_type": "deis", "solver_type": "bh2"}, "dpm++2m").config
    assert (dpm.algorithm_type.value, dpm.solver_type.value) == ("dpmsolver++", "midpoint")
