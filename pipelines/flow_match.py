"""FLUX's flow-matching Euler schedule, reproducing diffusers' FlowMatchEulerDiscreteScheduler as FluxPipeline
drives it (reference/flux.md 1.6): sigmas = linspace(1, 1/N, N), then dev's resolution-dependent exponential shift
(mu from the packed token count) or schnell's static shift, a terminal 0, and x += (sigma_next - sigma) * v in fp32.

No learned state, so it lives in the orchestrator. The arithmetic follows diffusers' dtypes step by step (float64
linspace -> float32 numpy shift -> float32 torch) so the timesteps fed to the transformer are bit-identical.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# options of FlowMatchEulerDiscreteScheduler that no FLUX.1 checkpoint sets; refused rather than silently ignored
UNSUPPORTED = ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
               "stochastic_sampling")


def calculate_shift(image_seq_len: int, config: dict) -> float:
    """mu, linear in the packed image token count (FluxPipeline's calculate_shift)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


@dataclass(frozen=True)
class FlowMatchSchedule:
    sigmas: torch.Tensor  # (steps + 1,) float32, last 0
    timesteps: torch.Tensor  # (steps,) float32, sigma * num_train_timesteps

    @classmethod
    def from_config(cls, config: dict, steps: int, image_seq_len: int) -> "FlowMatchSchedule":
        unsupported = [key for key in UNSUPPORTED if config.get(key)]
        if unsupported:
            raise ValueError(f"scheduler options not supported: {unsupported}")
        sigmas = np.array(np.linspace(1.0, 1 / steps, steps)).astype(np.float32)
        if config.get("use_dynamic_shifting", False):
            mu = calculate_shift(image_seq_len, config)
            if config.get("time_shift_type", "exponential") == "exponential":
                sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
            else:
                sigmas = mu / (mu + (1 / sigmas - 1) ** 1.0)
        else:
            shift = config.get("shift", 1.0)
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        sigmas = torch.from_numpy(sigmas).to(torch.float32)
        timesteps = sigmas * config.get("num_train_timesteps", 1000)
        return cls(torch.cat([sigmas, torch.zeros(1)]), timesteps)

    def __len__(self) -> int:
        return len(self.timesteps)

    def model_timestep(self, i: int, batch: int) -> torch.Tensor:
        """What the pipeline feeds the transformer: t / 1000 in float32 (not the sigma itself: rounding differs)."""
        return self.timesteps[i].expand(batch).to(torch.float32) / 1000

    def step(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        return (sample.to(torch.float32) + (self.sigmas[i + 1] - self.sigmas[i]) * velocity).to(velocity.dtype)

    def scale_noise(self, sample: torch.Tensor, noise: torch.Tensor, i: int = 0) -> torch.Tensor:
        """The image-to-image start point at step i: sigma * noise + (1 - sigma) * sample."""
        sigma = self.sigmas[i].to(sample.dtype)
        return sigma * noise + (1.0 - sigma) * sample
