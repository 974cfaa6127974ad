"""pipelines/euler.py EulerSchedule against diffusers' own EulerDiscreteScheduler (no server).

The yardstick is diffusers built from ObjectClear's scheduler/scheduler_config.json (objectclear.md 1.3), plus the
20-step numbers that document lists. EulerSchedule claims to follow diffusers' float32 order of operations, so the
schedule arrays are compared bit for bit; sampling loops are compared to float32 round-off.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler

from pipelines.euler import EulerSchedule

# ObjectClear's scheduler/scheduler_config.json, written out here from objectclear.md 1.3 (not imported from the code
# under test)
OBJECTCLEAR = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   prediction_type="epsilon", timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
                   use_karras_sigmas=False)
STEPS = (1, 4, 6, 8, 20)
SPACINGS = ("leading", "trailing", "linspace")


def diffusers_scheduler(config: dict, steps: int) -> EulerDiscreteScheduler:
    scheduler = EulerDiscreteScheduler(**config)
    scheduler.set_timesteps(steps)
    return scheduler


def config_with(**changes) -> dict:
    return {**OBJECTCLEAR, **changes}


# ----------------------------------------------------------------------------------------------------------------
# The schedule arrays
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", STEPS)
def test_schedule_arrays_equal_diffusers(spacing, steps):
    config = config_with(timestep_spacing=spacing)
    ours, theirs = EulerSchedule.from_config(config, steps), diffusers_scheduler(config, steps)

    assert len(ours) == steps
    assert ours.timesteps.dtype == torch.float32 and ours.sigmas.dtype == torch.float32
    assert ours.timesteps.shape == (steps,) and ours.sigmas.shape == (steps + 1,)
    # measured: bit-identical for every spacing and step count here
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=0)
    torch.testing.assert_close(ours.sigmas, theirs.sigmas, rtol=0, atol=0)
    assert float(ours.init_noise_sigma) == float(theirs.init_noise_sigma)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear"])
def test_linear_beta_schedule_equals_diffusers(beta_schedule):
    config = config_with(beta_schedule=beta_schedule, beta_start=0.0001, beta_end=0.02)
    ours, theirs = EulerSchedule.from_config(config, 10), diffusers_scheduler(config, 10)
    torch.testing.assert_close(ours.sigmas, theirs.sigmas, rtol=0, atol=0)
    assert float(ours.init_noise_sigma) == float(theirs.init_noise_sigma)


def test_documented_twenty_step_values():
    """objectclear.md 1.3: 951, 901, ..., 51, 1; the listed sigmas (3 decimals); init_noise_sigma ~ 11.074."""
    schedule = EulerSchedule.from_config(OBJECTCLEAR, 20)
    assert schedule.timesteps.tolist() == [float(t) for t in range(951, 0, -50)]
    documented = [11.028, 8.391, 6.506, 5.134, 4.117, 3.348, 2.756, 2.293, 1.923, 1.624, 1.376, 1.168, 0.990,
                  0.836, 0.698, 0.574, 0.458, 0.346, 0.228, 0.041, 0.0]
    np.testing.assert_allclose(schedule.sigmas.numpy(), documented, rtol=0, atol=6e-4)  # the doc rounds to 1e-3
    assert schedule.sigmas[-1].item() == 0.0
    # "leading" rule: sqrt(sigma_max^2 + 1), not sigma_max
    assert float(schedule.init_noise_sigma) == pytest.approx(11.074, abs=1e-3)
    assert float(schedule.init_noise_sigma) == pytest.approx((schedule.sigmas[0].item() ** 2 + 1) ** 0.5, rel=1e-6)


def test_init_noise_sigma_rule_per_spacing():
    """linspace/trailing start at sigma_max; leading at sqrt(sigma_max^2 + 1) (diffusers' rule)."""
    for spacing in SPACINGS:
        schedule = EulerSchedule.from_config(config_with(timestep_spacing=spacing), 8)
        sigma_max = schedule.sigmas.max().item()
        expected = (sigma_max ** 2 + 1) ** 0.5 if spacing == "leading" else sigma_max
        assert float(schedule.init_noise_sigma) == pytest.approx(expected, rel=1e-6), spacing


def test_schedule_properties():
    """Independent of diffusers: timesteps strictly decrease inside [0, 999], sigmas strictly decrease to 0."""
    for spacing in SPACINGS:
        for steps in STEPS:
            s = EulerSchedule.from_config(config_with(timestep_spacing=spacing), steps)
            assert 0 <= s.timesteps.min().item() and s.timesteps.max().item() <= 999
            assert torch.all(s.timesteps[:-1] > s.timesteps[1:])
            assert torch.all(s.sigmas[:-1] > s.sigmas[1:]) and s.sigmas[-1].item() == 0.0


# ----------------------------------------------------------------------------------------------------------------
# scale_model_input, step, add_noise
# ----------------------------------------------------------------------------------------------------------------

def _fake_unet(x: torch.Tensor, i: int, seed: int) -> torch.Tensor:
    """A deterministic 'noise prediction' that depends on the scaled input, so scale_model_input errors propagate."""
    g = torch.Generator().manual_seed(seed * 1000 + i)
    return 0.3 * x + torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1, 4, 8, 20])
def test_sampling_loop_equals_diffusers(spacing, steps):
    config = config_with(timestep_spacing=spacing)
    ours, theirs = EulerSchedule.from_config(config, steps), diffusers_scheduler(config, steps)
    noise = torch.randn(2, 4, 9, 13, generator=torch.Generator().manual_seed(steps))

    x_ours = noise * ours.init_noise_sigma
    x_theirs = noise * theirs.init_noise_sigma
    for i, t in enumerate(theirs.timesteps):
        scaled_ours = ours.scale_model_input(x_ours, i)
        scaled_theirs = theirs.scale_model_input(x_theirs, t)
        torch.testing.assert_close(scaled_ours, scaled_theirs, rtol=1e-6, atol=1e-6)  # measured: exact
        x_ours = ours.step(_fake_unet(scaled_ours, i, steps), i, x_ours)
        x_theirs = theirs.step(_fake_unet(scaled_theirs, i, steps), t, x_theirs, return_dict=False)[0]
    assert x_ours.dtype == torch.float32
    torch.testing.assert_close(x_ours, x_theirs, rtol=1e-6, atol=1e-6)  # measured: bit-identical
    # the loop really moved the sample (an identity step would fail here)
    assert (x_ours - noise * ours.init_noise_sigma).abs().max() > 1e-2


def test_scale_model_input_formula():
    schedule = EulerSchedule.from_config(OBJECTCLEAR, 20)
    x = torch.full((1, 4, 2, 2), 3.0)
    for i in (0, 7, 19):
        sigma = schedule.sigmas[i].item()
        np.testing.assert_allclose(schedule.scale_model_input(x, i).numpy(), 3.0 / (sigma ** 2 + 1) ** 0.5,
                                   rtol=1e-6)


def test_step_is_plain_euler():
    """x <- x + eps * (sigma_next - sigma) for epsilon prediction (objectclear.md 1.3)."""
    schedule = EulerSchedule.from_config(OBJECTCLEAR, 20)
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(1, 4, 5, 6, generator=g), torch.randn(1, 4, 5, 6, generator=g)
    for i in (0, 10, 19):  # 19: the last step lands on sigma 0, i.e. on the denoised estimate
        expected = x + eps * (schedule.sigmas[i + 1] - schedule.sigmas[i])
        torch.testing.assert_close(schedule.step(eps, i, x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(schedule.step(eps, 19, x), x - schedule.sigmas[19] * eps, rtol=1e-5, atol=1e-5)


def test_step_keeps_half_precision_like_diffusers():
    config, steps = OBJECTCLEAR, 4
    ours, theirs = EulerSchedule.from_config(config, steps), diffusers_scheduler(config, steps)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 6, 6, generator=g) * ours.init_noise_sigma
    eps = torch.randn(1, 4, 6, 6, generator=g).half()
    got = ours.step(eps, 0, x)
    want = theirs.step(eps, theirs.timesteps[0], x, return_dict=False)[0]
    assert got.dtype == want.dtype == torch.float16
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # measured: exact


@pytest.mark.parametrize("steps", [4, 6, 20])
def test_add_noise_at_index_1_equals_diffusers(steps):
    """The step-0 background reset: add_noise(image_latents, noise, timesteps[1]) with no begin index set."""
    ours, theirs = EulerSchedule.from_config(OBJECTCLEAR, steps), diffusers_scheduler(OBJECTCLEAR, steps)
    g = torch.Generator().manual_seed(steps)
    x0, noise = torch.randn(1, 4, 8, 10, generator=g), torch.randn(1, 4, 8, 10, generator=g)
    want = theirs.add_noise(x0, noise, theirs.timesteps[1:2])
    got = ours.add_noise(x0, noise, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # measured: exact
    # and it is x0 + sigma(t1) * noise with a sigma that is neither the first nor the last one
    assert ours.sigmas[1] < ours.sigmas[0] and ours.sigmas[1] > 0
    torch.testing.assert_close(got, x0 + ours.sigmas[1] * noise)

    # diffusers looks sigma up by timestep value, so it gives the same after a step has been taken too
    theirs.step(torch.zeros_like(x0), theirs.timesteps[0], x0)
    torch.testing.assert_close(theirs.add_noise(x0, noise, theirs.timesteps[1:2]), got, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# Configurations it does not implement must be refused, not silently mis-served
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [
    dict(prediction_type="v_prediction"),
    dict(prediction_type="sample"),
    dict(use_karras_sigmas=True),
    dict(use_exponential_sigmas=True),
    dict(use_beta_sigmas=True),
    dict(interpolation_type="log_linear"),
    dict(timestep_spacing="karras"),
    dict(beta_schedule="squaredcos_cap_v2"),
])
def test_unsupported_configs_raise(change):
    with pytest.raises(ValueError):
        EulerSchedule.from_config(config_with(**change), 20)


@pytest.mark.parametrize("change", [
    dict(steps_offset=0),
    dict(num_train_timesteps=500),
    dict(timestep_type="continuous"),  # only matters for v_prediction in diffusers
    dict(final_sigmas_type="sigma_min"),  # diffusers then ends on sigma_min instead of 0
    dict(rescale_betas_zero_snr=True),  # diffusers then rescales the betas (and the last alpha_cumprod)
    dict(trained_betas=[0.01] * 1000),  # diffusers then uses these betas instead of beta_start/beta_end
], ids=lambda change: next(iter(change)))
def test_other_diffusers_options_are_served_exactly_or_refused(change):
    """Any other config key diffusers honours must either give diffusers' schedule or raise ValueError."""
    config = config_with(**change)
    try:
        ours = EulerSchedule.from_config(config, 8)
    except ValueError:
        return
    theirs = diffusers_scheduler(config, 8)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=0)
    torch.testing.assert_close(ours.sigmas, theirs.sigmas, rtol=0, atol=0)
    assert float(ours.init_noise_sigma) == float(theirs.init_noise_sigma)


def test_objectclear_config_with_ignored_keys_is_accepted():
    """The real scheduler_config.json also carries keys Euler ignores (objectclear.md 1.3)."""
    config = config_with(clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True, sample_max_value=1.0,
                         _class_name="EulerDiscreteScheduler", _diffusers_version="0.21.0")
    schedule = EulerSchedule.from_config(config, 20)
    torch.testing.assert_close(schedule.sigmas, diffusers_scheduler(OBJECTCLEAR, 20).sigmas, rtol=0, atol=0)
