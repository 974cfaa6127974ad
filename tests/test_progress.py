"""The pipelines' observer hook in-process (no server): the stages in order, one step call per denoising step with
the current latents in image layout, and cancellation that stops the loop before its next network call."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.components import local_components
from pipelines.flux import FluxConfig, FluxGenerator, GenerateSettings, generate_models
from pipelines.progress import Observer, latent_preview


class Recording(Observer):
    def __init__(self, cancel_after: int | None = None):
        self.events: list[tuple] = []
        self.cancel_after = cancel_after

    def stage(self, name):
        self.events.append(("stage", name))

    def step(self, step, steps, latents):
        self.events.append(("step", step, steps, tuple(latents.shape)))

    def cancelled(self):
        return self.cancel_after is not None and sum(e[0] == "step" for e in self.events) >= self.cancel_after


class Counting:
    def __init__(self, component):
        self.component, self.calls = component, 0

    def __call__(self, **inputs):
        self.calls += 1
        return self.component(**inputs)


@pytest.fixture(scope="module")
def transformer(model_repository) -> Counting:
    return Counting(local_components(model_repository, {"transformer": generate_models("schnell")["transformer"]})["transformer"])


@pytest.fixture(scope="module")
def generator(model_repository, transformer):
    others = {role: model for role, model in generate_models("schnell").items() if role != "transformer"}
    components = dict(local_components(model_repository, others), transformer=transformer)
    return FluxGenerator(components, FluxConfig.load(model_repository / "flux_schnell_generate" / "1" / "pipeline"))


SETTINGS = GenerateSettings(width=256, height=288, steps=3)


def test_stages_and_steps_in_order_and_the_same_image(generator):
    observer = Recording()
    image = generator("a red bicycle", 3, SETTINGS, observer=observer)
    latent = (16, 288 // 8, 256 // 8)  # the FLUX VAE's 16 channels, an eighth of each side
    assert observer.events == [("stage", "text_encode"), ("stage", "denoise"),
                               *(("step", k, 3, (1, *latent)) for k in (1, 2, 3)), ("stage", "decode")]
    assert np.array_equal(image, generator("a red bicycle", 3, SETTINGS))  # the default observer: the same image


def test_cancelling_stops_the_loop_before_the_next_transformer_call(generator, transformer):
    before = transformer.calls
    with pytest.raises(InterruptedError):
        generator("a red bicycle", 3, SETTINGS, observer=Recording(cancel_after=1))
    assert transformer.calls - before == 1


def test_latent_preview_is_rgb_at_latent_resolution():
    for channels in (4, 16):
        preview = latent_preview(torch.zeros(1, channels, 5, 7))
        assert preview.shape == (5, 7, 3) and preview.dtype == np.uint8
    with pytest.raises(ValueError, match="3-channel"):
        latent_preview(torch.zeros(1, 3, 5, 7))
