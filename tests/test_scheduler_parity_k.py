"""Parity of the σ-family and multistep schedulers (Euler, Euler-a, LMS, Heun, DPM-Solver++, PNDM) against diffusers.

Both libraries run the same loop with the fake model of test_scheduler_parity: ``scale_model_input`` → model →
``step``, on their own trajectories from the same start. Compared: timesteps (exactly), σ's and
``init_noise_sigma`` (float32 rounding: diffusers stores σ in float32, we in float64), every model input, every
``prev_sample`` and (where diffusers returns it) ``pred_original_sample`` at rtol 1e-4 / atol 1e-5 in float32.
Stochastic steps get diffusers' ``torch.Generator().manual_seed(k)`` draw as ``variance_noise``.

As in test_scheduler_parity, the option matrices hand diffusers our float64 ᾱ before ``set_timesteps`` (it
keeps ᾱ in float32, whose rounding near t = 0 moves σ_min by up to 3e-4 relative and the last steps beyond
rtol 1e-4); unmodified diffusers is compared on Stable Diffusion 1.5's config at a looser tolerance.

Option matrices: every (beta schedule, prediction type, spacing) triple, each with one row of a strength-2
covering array of the scheduler's boolean options (row (a + b + c) mod 6 of the triple's indices, which
covers every pair of option values, booleans and triples alike).
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("scipy")  # diffusers' LMS integrates its coefficients with scipy.integrate.quad
# diffusers calls np.array() on torch tensors, which NumPy 2 warns about on every set_timesteps / step
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

from difftrt.schedulers import SCHEDULERS, from_config  # noqa: E402
from tests.test_scheduler_parity import (  # noqa: E402
    BETA_SCHEDULES, DDIM_ROWS, PREDICTIONS, SD15_SCHEDULER_CONFIG, SHAPE, SPACINGS, TOL, fake_model, replayed_noise,
)  # fmt: skip

STEPS = 10
THEIRS = {  # our short name -> diffusers class name
    "ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler", "dpm++2m": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler", "pndm": "PNDMScheduler", "heun": "HeunDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}  # fmt: skip
SIGMA_FAMILY = ["euler", "euler-a", "dpm++2m", "lms", "heun", "unipc"]
THRESHOLDING = {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 3.0}
# Each scheduler's boolean options: the option dict each column sets when its bit is 1 (DDIM_ROWS' columns).
BOOLEAN_OPTIONS = {
    "euler": [{"use_karras_sigmas": True}, {"final_sigmas_type": "sigma_min"}, {"rescale_betas_zero_snr": True},
              {"steps_offset": 1}, {"s_churn": 1.0}, {"trained_betas": True}],
    "euler-a": [{"rescale_betas_zero_snr": True}, {"steps_offset": 1}],
    "lms": [{"use_karras_sigmas": True}, {"steps_offset": 1}],
    "heun": [{"use_karras_sigmas": True}, {"steps_offset": 1}, {"clip_sample": True, "clip_sample_range": 1.5}],
    "dpm++2m": [{"use_karras_sigmas": True}, {"final_sigmas_type": "sigma_min"}, {"rescale_betas_zero_snr": True},
                {"steps_offset": 1}, {"lower_order_final": False}, THRESHOLDING, {"solver_type": "heun"}],
    "pndm": [{"skip_prk_steps": True}, {"set_alpha_to_one": True}, {"steps_offset": 1}],
    "unipc": [{"use_karras_sigmas": True}, {"final_sigmas_type": "sigma_min"}, {"rescale_betas_zero_snr": True},
              {"steps_offset": 1}, {"lower_order_final": False}, THRESHOLDING, {"solver_type": "bh1"}],
}  # fmt: skip
STEP_OPTIONS = {"s_churn", "trained_betas"}  # handled by the test, not config keys
UNSUPPORTED_BY_DIFFUSERS = {("euler-a", "sample"), ("pndm", "sample")}
# The capped cosine schedule ends at ᾱ_999 ≈ 2e-9: σ_max ≈ 2e4, so x ≈ σ·z carries ~4e-3 of float32 rounding in
# both libraries and diffusers' PNDM formula multiplies x by sqrt(ᾱ_prev/ᾱ_t) ≈ 5e3 (see test_pndm_..._float64).
COSINE_TOL = {"rtol": 2e-3, "atol": 1e-3}


def matrix_cases() -> list[tuple]:
    cases = []
    for short, options in BOOLEAN_OPTIONS.items():
        for (a, beta), (b, pred), (c, spacing) in itertools.product(*map(enumerate, (BETA_SCHEDULES, PREDICTIONS,
                                                                                      SPACINGS))):
            if (short, pred) not in UNSUPPORTED_BY_DIFFUSERS:
                row = DDIM_ROWS[(a + b + c) % 6][: len(options)]
                cases.append((short, beta, pred, spacing, "".join(map(str, row))))
    return cases


def make_pair(short: str, config: dict, float64_schedule: bool = True):
    """(ours, theirs) from one config; with ``float64_schedule`` diffusers gets our ᾱ (and DDIM/PNDM's final ᾱ)."""
    ours = from_config(config, short)
    theirs = getattr(diffusers, THEIRS[short]).from_config(config)
    if float64_schedule:
        theirs.alphas_cumprod = torch.from_numpy(ours.alphas_cumprod.copy())
        if hasattr(theirs, "final_alpha_cumprod"):
            theirs.final_alpha_cumprod = torch.tensor(ours.final_alpha_cumprod, dtype=torch.float64)
    return ours, theirs


def check_grids(ours, theirs, float64_schedule: bool = True) -> None:
    """Timesteps (dtype kind, values exactly), σ's and init_noise_sigma (float32 rounding; float32 ᾱ: 5e-4)."""
    want = theirs.timesteps.numpy()
    assert ours.timesteps.dtype.kind == want.dtype.kind, (ours.timesteps.dtype, want.dtype)
    np.testing.assert_array_equal(ours.timesteps, want)
    rel = 2e-7 if float64_schedule else 5e-4
    if hasattr(ours, "sigmas"):
        np.testing.assert_allclose(ours.sigmas, theirs.sigmas.numpy(), rtol=rel)
    assert ours.init_noise_sigma == pytest.approx(float(theirs.init_noise_sigma), rel=rel)


def assert_close(got: np.ndarray, want: np.ndarray, tol: dict, what: str) -> None:
    """Elementwise rtol, with atol taken relative to the array's scale max(1, max|want|) (see the module doc)."""
    atol = tol["atol"] * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=tol["rtol"], atol=atol, err_msg=what)


def run_loop(ours, theirs, timesteps, x: np.ndarray, stochastic: bool, tol: dict = TOL, **step_kwargs) -> None:
    """Step both through ``timesteps`` (diffusers' values; ours index-aligned) from ``x``, comparing each step."""
    x_ours, x_theirs = x, torch.from_numpy(x.copy())
    offset = len(theirs.timesteps) - len(timesteps)
    lms = isinstance(theirs, diffusers.LMSDiscreteScheduler)
    for k, t in enumerate(timesteps):
        t_ours = ours.timesteps[offset + k]
        where = f"step {k} (t={float(t)})"
        in_theirs, in_ours = theirs.scale_model_input(x_theirs, t), ours.scale_model_input(x_ours, t_ours)
        assert_close(in_ours, in_theirs.numpy(), tol, f"model input at {where}")
        kwargs = dict(step_kwargs)
        if stochastic:
            kwargs["generator"] = torch.Generator().manual_seed(k)
        if lms:  # orders 1, 2, 3, 4 from the first step run, as ours (diffusers issue #5630; same from step 0)
            kwargs["order"] = min(k + 1, 4)
        out_theirs = theirs.step(torch.from_numpy(fake_model(in_theirs.numpy(), float(t))), t, x_theirs, **kwargs)
        kwargs.pop("generator", None)
        noise = {"variance_noise": replayed_noise(k)} if stochastic else {}
        out_ours = ours.step(fake_model(in_ours, float(t_ours)), t_ours, x_ours, **noise, **kwargs)
        assert out_ours.prev_sample.dtype == np.float32 and out_ours.prev_sample.shape == SHAPE
        assert_close(out_ours.prev_sample, out_theirs.prev_sample.numpy(), tol, f"prev_sample at {where}")
        x0_theirs = getattr(out_theirs, "pred_original_sample", None)
        if x0_theirs is None and isinstance(theirs, (diffusers.DPMSolverMultistepScheduler,
                                                     diffusers.UniPCMultistepScheduler)):
            x0_theirs = theirs.model_outputs[-1]  # diffusers keeps x̂_0 there instead
        if x0_theirs is not None:
            assert_close(out_ours.pred_original_sample, x0_theirs.numpy(), tol, f"pred_original_sample at {where}")
        x_ours, x_theirs = out_ours.prev_sample, out_theirs.prev_sample


def start(scheduler) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    return (x * np.float32(scheduler.init_noise_sigma)).astype(np.float32)


@pytest.mark.parametrize(("short", "beta_schedule", "prediction", "spacing", "row"), matrix_cases())
def test_loop_matches_diffusers(short, beta_schedule, prediction, spacing, row):
    config = {"beta_schedule": beta_schedule, "prediction_type": prediction, "timestep_spacing": spacing}
    if short == "heun":  # its own defaults are Stable Diffusion's betas; test the shared ones too
        config.update(beta_start=0.0001, beta_end=0.02)
    step_kwargs = {}
    for bit, options in zip(row, BOOLEAN_OPTIONS[short]):
        if bit == "1":
            config.update({k: v for k, v in options.items() if k not in STEP_OPTIONS})
            step_kwargs.update({k: v for k, v in options.items() if k == "s_churn"})
    if "trained_betas" in BOOLEAN_OPTIONS[short][-1] and row[-1] == "1":
        config["trained_betas"] = from_config(config, "ddpm").betas.tolist()
    if step_kwargs:
        step_kwargs.update(s_tmin=0.5, s_tmax=50.0)
    tol = COSINE_TOL if beta_schedule == "squaredcos_cap_v2" else TOL
    if short == "unipc":
        if config.get("solver_type") == "bh1" or config.get("lower_order_final") is False:
            config["final_sigmas_type"] = "sigma_min"  # diffusers' last step to σ = 0 is NaN/inf there (see below)
        if beta_schedule == "squaredcos_cap_v2":
            config.pop("use_karras_sigmas", None)  # repeated Karras timesteps: diffusers' UniPC steps past its grid
        if config.get("rescale_betas_zero_snr"):  # σ_max ≈ 4096: x ≈ 4096·z, whose float32 rounding the bh updates
            tol = {"rtol": 1e-3, "atol": 1e-4}    # cancel down to values ~1 (seen: 3e-4 absolute at |x| ≈ 12)
    ours, theirs = make_pair(short, config)
    ours.set_timesteps(STEPS)
    theirs.set_timesteps(STEPS)
    check_grids(ours, theirs)
    stochastic = short == "euler-a" or bool(step_kwargs)
    run_loop(ours, theirs, theirs.timesteps, start(ours), stochastic, tol, **step_kwargs)


DPM_SOLVER_CASES = list(itertools.product(["dpmsolver++", "sde-dpmsolver++"], [1, 2, 3], ["midpoint", "heun"],
                                          [8, 20]))  # fmt: skip


@pytest.mark.parametrize(("algorithm", "order", "solver_type", "steps"), DPM_SOLVER_CASES)
def test_dpm_solver_variants_match_diffusers(algorithm, order, solver_type, steps):
    """Orders 1–3, both second-order forms, ODE and SDE, below and above the 15-step lower_order_final bound."""
    config = {"algorithm_type": algorithm, "solver_order": order, "solver_type": solver_type,
              "euler_at_final": steps == 20 and order == 3, "final_sigmas_type": "sigma_min" if order == 2 else "zero"}
    ours, theirs = make_pair("dpm++2m", config)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    check_grids(ours, theirs)
    run_loop(ours, theirs, theirs.timesteps, start(ours), stochastic=algorithm.startswith("sde"))


UNIPC_CASES = list(itertools.product([1, 2, 3], ["bh1", "bh2"], [8, 20], [True, False], [(), (0, 3)]))


@pytest.mark.parametrize(("order", "solver_type", "steps", "lower_order_final", "disable_corrector"), UNIPC_CASES)
def test_unipc_variants_match_diffusers(order, solver_type, steps, lower_order_final, disable_corrector):
    """Orders 1–3, both B(h), 8 and 20 steps, with and without lower_order_final, the corrector switched off
    after some steps (the last σ is zero only where diffusers' last step is finite there: bh2 with
    lower_order_final)."""
    finite_at_zero = solver_type == "bh2" and lower_order_final
    config = {"solver_order": order, "solver_type": solver_type, "disable_corrector": list(disable_corrector),
              "lower_order_final": lower_order_final, "final_sigmas_type": "zero" if finite_at_zero else "sigma_min"}
    ours, theirs = make_pair("unipc", config)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    check_grids(ours, theirs)
    run_loop(ours, theirs, theirs.timesteps, start(ours), stochastic=False)


@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_last_step_to_sigma_zero_lands_on_the_prediction(order, solver_type):
    """To σ = 0 the update's limit is x̂_0 (e^{−h} → 0); ours takes it at order 1 for every configuration, where
    diffusers returns NaN/inf for bh1 and for orders > 1 (lower_order_final off)."""
    ours = from_config({"solver_order": order, "solver_type": solver_type, "lower_order_final": False}, "unipc")
    ours.set_timesteps(6)
    assert ours.sigmas[-1] == 0.0
    x = start(ours)
    for t in ours.timesteps:
        out = ours.step(fake_model(x, float(t)), t, x)
        x = out.prev_sample
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, out.pred_original_sample)


@pytest.mark.parametrize("short", ["euler", "lms", "heun", "dpm++2m", "unipc"])
def test_exponential_sigmas_and_sigma_bounds_match_diffusers(short):
    config = {"use_exponential_sigmas": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
              "beta_end": 0.012, **({"sigma_min": 0.1, "sigma_max": 10.0} if short in ("euler", "unipc") else {})}
    ours, theirs = make_pair(short, config)
    ours.set_timesteps(12)
    theirs.set_timesteps(12)
    check_grids(ours, theirs)
    run_loop(ours, theirs, theirs.timesteps, start(ours), stochastic=False)


@pytest.mark.parametrize("short", list(THEIRS))
def test_sd15_loop_matches_unmodified_diffusers(short):
    """Stable Diffusion 1.5's scheduler config as shipped (PNDM, skip_prk_steps) run by every class."""
    ours, theirs = make_pair(short, SD15_SCHEDULER_CONFIG, float64_schedule=False)
    ours.set_timesteps(STEPS)
    theirs.set_timesteps(STEPS)
    check_grids(ours, theirs, float64_schedule=False)
    step_kwargs = {"eta": 0.6} if short == "ddim" else {}
    stochastic = short in ("euler-a", "ddpm", "ddim")
    run_loop(ours, theirs, theirs.timesteps, start(ours), stochastic, tol={"rtol": 1e-3, "atol": 1e-4},
             **step_kwargs)


@pytest.mark.parametrize("strength", [0.3, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("short", list(THEIRS))
def test_img2img_slicing_add_noise_and_loop_match_diffusers(short, strength):
    """diffusers' img2img: t_start = n − min(int(n·s), n); run timesteps[t_start·order:] after
    set_begin_index(t_start·order), from add_noise(x0, noise, timesteps[:1]); compared step by step."""
    ours, theirs = make_pair(short, {**SD15_SCHEDULER_CONFIG, "timestep_spacing": "leading"})
    ours.set_timesteps(STEPS)
    theirs.set_timesteps(STEPS)
    assert ours.order == theirs.order
    t_start = STEPS - min(int(STEPS * strength), STEPS)
    begin = t_start * ours.order
    timesteps = theirs.timesteps[begin:]
    np.testing.assert_array_equal(ours.timesteps[begin:], timesteps.numpy())
    ours.set_begin_index(begin)
    if hasattr(theirs, "set_begin_index"):  # as diffusers' pipelines check; DDIM, DDPM and PNDM have none
        theirs.set_begin_index(begin)
    rng = np.random.default_rng(1)
    x0, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal(SHAPE).astype(np.float32)
    first = timesteps[:1].repeat(SHAPE[0])
    want = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), first).numpy()
    got = ours.add_noise(x0, noise, first.numpy())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if short == "pndm" and begin > 0:
        return  # diffusers' PNDM img2img is off by a stride (see pndm.py); test_schedulers_k checks ours
    step_kwargs = {"eta": 0.6} if short == "ddim" else {}
    run_loop(ours, theirs, timesteps, got, short in ("euler-a", "ddpm", "ddim"), **step_kwargs)


@pytest.mark.parametrize("short", SIGMA_FAMILY)
def test_add_noise_by_timestep_lookup_matches_diffusers(short):
    """Without a begin index, each row's σ is looked up from its timestep (training-style use)."""
    ours, theirs = make_pair(short, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    ours.set_timesteps(STEPS)
    theirs.set_timesteps(STEPS)
    rng = np.random.default_rng(2)
    x0, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal(SHAPE).astype(np.float32)
    timesteps = theirs.timesteps[[0, 5]]
    want = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), timesteps).numpy()
    np.testing.assert_allclose(ours.add_noise(x0, noise, timesteps.numpy()), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("short", [s for s in THEIRS if s not in ("ddim", "ddpm")])
def test_config_fields_and_defaults_match_diffusers(short):
    theirs = getattr(diffusers, THEIRS[short])()
    ours_dict = SCHEDULERS[short]().config.to_dict()
    assert ours_dict.pop("_class_name") == THEIRS[short]
    assert set(ours_dict) == set(inspect.signature(type(theirs).__init__).parameters) - {"self"}
    for key, value in ours_dict.items():
        assert theirs.config[key] == value, key


def trajectory(scheduler, x: np.ndarray, steps: int) -> list[np.ndarray]:
    """prev_sample of every step of a deterministic loop (ours on NumPy arrays, diffusers' on tensors)."""
    torch_mode = not hasattr(scheduler, "config_class")
    wrap, unwrap = (torch.from_numpy, lambda a: a.numpy()) if torch_mode else (lambda a: a, lambda a: a)
    scheduler.set_timesteps(steps)
    out, state = [], wrap(x)
    for t in scheduler.timesteps:
        model_in = unwrap(scheduler.scale_model_input(state, t))
        state = scheduler.step(wrap(0.3 * model_in + np.asarray(0.1 * np.sin(float(t) / 100), model_in.dtype)), t,
                               state).prev_sample
        out.append(unwrap(state).astype(np.float64))
    return out


@pytest.mark.parametrize("short", ["euler", "lms", "pndm"])
def test_cosine_schedule_float32_error_is_no_worse_than_diffusers(short):
    """What COSINE_TOL allows for: against a float64 run of ours, our float32 loop is as close as diffusers'."""
    config = {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    ours, theirs = make_pair(short, config)
    ours.set_timesteps(STEPS)
    x = start(ours)
    reference = trajectory(from_config(config, short), x.astype(np.float64), STEPS)
    for k, (want, got_ours, got_theirs) in enumerate(zip(reference, trajectory(ours, x, STEPS),
                                                        trajectory(theirs, x, STEPS))):
        err_ours, err_theirs = np.abs(got_ours - want).max(), np.abs(got_theirs - want).max()
        assert err_ours <= 1.5 * err_theirs + 1e-6, f"step {k}: ours {err_ours:.2e}, diffusers {err_theirs:.2e}"


@pytest.mark.parametrize("short", ["pndm", "lms"])
def test_diffusers_img2img_misses_x0_where_ours_deviates(short):
    """Why pndm.py and lms.py deviate from diffusers in img2img: with a model that knows x_0, diffusers' loop from
    a begin index ends off x_0 (PNDM: steps one stride off their timesteps; LMS: a 4th-order weight on one
    derivative, issue #5630) while ours lands on it. Fails once diffusers fixes it: then drop the deviation."""
    config = {**SD15_SCHEDULER_CONFIG, "set_alpha_to_one": True}
    rng = np.random.default_rng(3)
    x0, noise = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    alpha_bar = from_config(config, short).alphas_cumprod
    errors = {}
    for name, scheduler in zip(("ours", "diffusers"), make_pair(short, config)):
        scheduler.set_timesteps(STEPS)
        theirs = not hasattr(scheduler, "config_class")
        wrap, unwrap = (torch.from_numpy, lambda a: a.numpy()) if theirs else (lambda a: a, lambda a: a)
        timesteps = scheduler.timesteps[4:]  # integers for both grids at 10 steps (LMS: multiples of 111)
        if hasattr(scheduler, "set_begin_index"):  # diffusers' PNDM has none
            scheduler.set_begin_index(4)
        x = scheduler.add_noise(wrap(x0), wrap(noise), timesteps[:1])
        for t in timesteps:
            model_in, a = unwrap(scheduler.scale_model_input(x, t)), alpha_bar[int(t)]
            eps = (model_in - np.sqrt(a) * x0) / np.sqrt(1 - a)  # the exact noise of the variance-preserving input
            x = scheduler.step(wrap(eps), t, x).prev_sample
        errors[name] = float(np.abs(unwrap(x) - x0).max())
    assert errors["ours"] < 1e-6 and errors["diffusers"] > 1e-2, errors


@pytest.mark.parametrize("grid", ["use_karras_sigmas", "use_exponential_sigmas"])
def test_unipc_final_sigma_min_of_a_bounded_grid_matches_diffusers(grid):
    """With final_sigmas_type "sigma_min", a respaced grid ends on its own last σ (here the configured sigma_min)."""
    config = {grid: True, "sigma_min": 0.1, "sigma_max": 10.0, "final_sigmas_type": "sigma_min",
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    ours, theirs = make_pair("unipc", config)
    ours.set_timesteps(12)
    theirs.set_timesteps(12)
    assert ours.sigmas[-1] == pytest.approx(0.1)
    check_grids(ours, theirs)
    run_loop(ours, theirs, theirs.timesteps, start(ours), stochastic=False)
