"""Euler discrete sampling schedule for epsilon-prediction models (the sampler ObjectClear ships with).

Computes what diffusers' EulerDiscreteScheduler computes for `set_timesteps`, `scale_model_input`, `step` (no churn)
and `add_noise`, as plain index-addressed arrays, so a serving loop on any device needs no diffusers state machine.
Arithmetic follows diffusers' order of operations in float32 so results agree to the last bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SUPPORTED = {"prediction_type": {"epsilon"}, "interpolation_type": {"linear"},
             "timestep_spacing": {"leading", "trailing", "linspace"}, "beta_schedule": {"linear", "scaled_linear"}}


def _check_supported(config: dict) -> None:
    for key, allowed in SUPPORTED.items():
        if config.get(key, next(iter(allowed))) not in allowed:
            raise ValueError(f"Euler schedule: {key}={config[key]!r} is not supported (supported: {sorted(allowed)})")
    for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "rescale_betas_zero_snr",
                 "trained_betas"):
        if config.get(flag):
            raise ValueError(f"Euler schedule: {flag} is not supported")
    if config.get("final_sigmas_type", "zero") != "zero":
        raise ValueError("Euler schedule: only final_sigmas_type='zero' is supported")


@dataclass(frozen=True)
class EulerSchedule:
    timesteps: torch.Tensor  # (N,) float32, the values the UNet is conditioned on
    sigmas: torch.Tensor  # (N+1,) float32, ending with 0
    init_noise_sigma: torch.Tensor  # 0-dim float32, as diffusers computes it

    @classmethod
    def from_config(cls, config: dict, steps: int) -> "EulerSchedule":
        _check_supported(config)
        train_steps = config.get("num_train_timesteps", 1000)
        beta_start, beta_end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
        if config.get("beta_schedule", "linear") == "scaled_linear":
            betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, train_steps, dtype=torch.float32) ** 2
        else:
            betas = torch.linspace(beta_start, beta_end, train_steps, dtype=torch.float32)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        spacing, offset = config.get("timestep_spacing", "linspace"), config.get("steps_offset", 0)
        if spacing == "linspace":
            timesteps = np.linspace(0, train_steps - 1, steps, dtype=np.float32)[::-1].copy()
        elif spacing == "leading":
            timesteps = (np.arange(0, steps) * (train_steps // steps)).round()[::-1].copy().astype(np.float32)
            timesteps += offset
        else:  # trailing
            timesteps = (np.arange(train_steps, 0, -train_steps / steps)).round().copy().astype(np.float32) - 1
        train_sigmas = np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)
        sigmas = np.interp(timesteps, np.arange(0, len(train_sigmas)), train_sigmas)
        sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
        max_sigma = sigmas.max()
        init = max_sigma if spacing in ("linspace", "trailing") else (max_sigma ** 2 + 1) ** 0.5
        return cls(torch.from_numpy(timesteps.astype(np.float32)), sigmas, init)

    def __len__(self) -> int:
        return len(self.timesteps)

    def scale_model_input(self, sample: torch.Tensor, i: int) -> torch.Tensor:
        return sample / ((self.sigmas[i] ** 2 + 1) ** 0.5)

    def step(self, noise_pred: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        sample = sample.to(torch.float32)
        sigma = self.sigmas[i]
        denoised = sample - sigma * noise_pred
        derivative = (sample - denoised) / sigma
        return (sample + derivative * (self.sigmas[i + 1] - sigma)).to(noise_pred.dtype)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, i: int) -> torch.Tensor:
        return original + noise * self.sigmas[i]
