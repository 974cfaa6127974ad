"""Our flow-match Euler schedule against diffusers' FlowMatchEulerDiscreteScheduler driven as FluxPipeline drives
it: same sigmas, timesteps, transformer timesteps and Euler updates, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_shift

from export.tiny import FLUX_VARIANTS
from pipelines.flow_match import FlowMatchSchedule, calculate_shift

COMMON = dict(num_train_timesteps=1000, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
              max_image_seq_len=4096)
CONFIGS = {"schnell": dict(COMMON, **FLUX_VARIANTS["schnell"][2]), "dev": dict(COMMON, **FLUX_VARIANTS["dev"][2])}


def diffusers_schedule(config: dict, steps: int, seq_len: int) -> FlowMatchEulerDiscreteScheduler:
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    mu = diffusers_shift(seq_len, 256, 4096, 0.5, 1.15)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler


@pytest.mark.parametrize("variant", sorted(CONFIGS))
@pytest.mark.parametrize("steps,seq_len", [(1, 16), (2, 16), (4, 1024), (28, 1024), (50, 4096), (4, 3000)])
def test_schedule_is_bit_identical(variant, steps, seq_len):
    config = CONFIGS[variant]
    ours = FlowMatchSchedule.from_config(config, steps, seq_len)
    theirs = diffusers_schedule(config, steps, seq_len)
    assert torch.equal(ours.sigmas, theirs.sigmas)
    assert torch.equal(ours.timesteps, theirs.timesteps)
    generator = torch.Generator().manual_seed(steps)
    sample = torch.randn(1, seq_len, 64, generator=generator)
    ours_sample = theirs_sample = sample
    for i, t in enumerate(theirs.timesteps):
        # FluxPipeline: timestep = t.expand(B).to(latents.dtype) / 1000
        assert torch.equal(ours.model_timestep(i, 2), t.expand(2).to(torch.float32) / 1000)
        velocity = torch.randn(sample.shape, generator=generator)
        ours_sample = ours.step(velocity, i, ours_sample)
        theirs_sample = theirs.step(velocity, t, theirs_sample, return_dict=False)[0]
        assert torch.equal(ours_sample, theirs_sample)


def test_schnell_is_unshifted_and_dev_is_shifted():
    schnell = FlowMatchSchedule.from_config(CONFIGS["schnell"], 4, 1024)
    assert schnell.sigmas.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    dev = FlowMatchSchedule.from_config(CONFIGS["dev"], 4, 1024)
    assert (dev.sigmas[1:-1] > schnell.sigmas[1:-1]).all()  # shifting keeps more noise early


def test_shift_is_linear_in_the_token_count():
    assert calculate_shift(256, COMMON) == pytest.approx(0.5)
    assert calculate_shift(4096, COMMON) == pytest.approx(1.15)
    assert calculate_shift(1024, COMMON) == diffusers_shift(1024)


def test_scale_noise_matches_diffusers_at_the_first_step():
    config = CONFIGS["dev"]
    ours = FlowMatchSchedule.from_config(config, 4, 16)
    theirs = diffusers_schedule(config, 4, 16)
    theirs.set_begin_index(0)
    sample, noise = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    assert torch.equal(ours.scale_noise(sample, noise), theirs.scale_noise(sample, theirs.timesteps[:1], noise))


@pytest.mark.parametrize("option", ["use_karras_sigmas", "invert_sigmas", "stochastic_sampling", "shift_terminal"])
def test_unsupported_options_are_refused(option):
    with pytest.raises(ValueError, match=option):
        FlowMatchSchedule.from_config(dict(CONFIGS["dev"], **{option: 0.5 if option == "shift_terminal" else True}),
                                      4, 16)
