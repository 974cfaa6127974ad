"""Smoke tests of the independent ObjectClear reference (tests/reference/) on the tiny random checkpoint."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import skimage.data
from diffusers import EulerDiscreteScheduler
from diffusers.models.attention_processor import AttnProcessor
from PIL import Image, ImageDraw

from reference.objectclear_reference import (attention_guided_fusion, attention_layer, load_components,
                                             objectclear_reference, resized_size, run_objectclear_reference)

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "artifacts" / "tiny" / "objectclear"
SHORT_SIDE = 256  # chelsea (451x300) runs at 384x256: both resize branches and a resize back are exercised


@pytest.fixture(scope="module")
def checkpoint() -> str:
    if not (CHECKPOINT / "unet" / "config.json").exists():
        from export.tiny import build_tiny_objectclear  # data preparation only; no algorithm code comes from there
        build_tiny_objectclear(CHECKPOINT)
    return str(CHECKPOINT)


@pytest.fixture(scope="module")
def photo() -> tuple[Image.Image, Image.Image]:
    image = Image.fromarray(skimage.data.chelsea())  # 451x300, non-square
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).ellipse((140, 50, 310, 230), fill=255)  # the cat's head
    return image, mask


def test_resize_rule():
    assert resized_size((451, 300), 256) == (384, 256)
    assert resized_size((300, 451), 256) == (256, 384)
    assert resized_size((200, 120), 256) == (208, 128)  # smaller than short_side: only rounded up to 16
    assert resized_size((512, 512), 512) == (512, 512)


def test_outputs_have_input_size_and_binary_mask(checkpoint, photo):
    image, mask = photo
    out, out_mask = objectclear_reference(checkpoint, image, mask, seed=0, steps=3, guidance_scale=2.5,
                                          short_side=SHORT_SIDE)
    assert (out.mode, out.size) == ("RGB", image.size)
    assert (out_mask.mode, out_mask.size) == ("L", image.size)
    values = set(np.unique(np.asarray(out_mask)).tolist())
    # min-max normalisation puts at least one latent cell at 255 > 128, so the mask is never empty
    assert values == {0, 255}


def test_seed_determines_the_result(checkpoint, photo):
    image, mask = photo
    run = lambda seed: np.asarray(objectclear_reference(checkpoint, image, mask, seed, 2, 2.5, SHORT_SIDE)[0])
    first, again, other = run(1), run(1), run(2)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).max() > 0


def test_loop_extras_run_once_and_leave_the_unet_stock(checkpoint, photo):
    image, mask = photo
    with mock.patch.object(EulerDiscreteScheduler, "add_noise", autospec=True,
                           side_effect=EulerDiscreteScheduler.add_noise) as add_noise:
        result = run_objectclear_reference(checkpoint, image, mask, 0, 3, 2.5, SHORT_SIDE)
    # the background reset: exactly once, at the noise level of the second timestep
    assert add_noise.call_count == 1
    assert add_noise.call_args.args[3].tolist() == [result.timesteps[1].item()]

    # the attention capture produced a min-max normalised map at latent size
    width, height = result.size
    assert result.attention_map.shape == (height // 8, width // 8)
    assert result.attention_map.min().item() == pytest.approx(0, abs=1e-6)
    assert result.attention_map.max().item() == pytest.approx(1, abs=1e-6)
    assert result.prompt_embeds.shape[1] == 77

    # and was undone: stock processor back, no instance-level get_attention_scores left behind
    attn = attention_layer(load_components(checkpoint).unet)
    assert not isinstance(attn.processor, AttnProcessor)
    assert "get_attention_scores" not in vars(attn)


def test_single_step_without_cfg_skips_the_reset(checkpoint, photo):
    image, mask = photo
    with mock.patch.object(EulerDiscreteScheduler, "add_noise", autospec=True,
                           side_effect=EulerDiscreteScheduler.add_noise) as add_noise:
        out, _ = objectclear_reference(checkpoint, image, mask, 0, 1, 1.0, SHORT_SIDE)
    assert add_noise.call_count == 0
    assert out.size == image.size


def test_fusion_extremes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)

    # no attention anywhere and nothing generated differently: HF(x) + LF(x) = x, up to the uint8 truncation
    fused, hard = attention_guided_fusion(image, image, np.zeros((8, 12), np.uint8))
    assert hard.max() == 0
    assert np.abs(fused.astype(int) - image.astype(int)).max() <= 1

    # attention everywhere: the generated image wins outright
    fused, hard = attention_guided_fusion(image, other, np.full((8, 12), 255, np.uint8))
    assert hard.min() == 1
    np.testing.assert_array_equal(fused, other)


def test_fusion_refuses_sizes_the_wavelet_cannot_round_trip():
    image = np.zeros((40, 40, 3), np.uint8)  # 40 / 16 = 2.5: zoom would come back as 32x32
    with pytest.raises(ValueError, match="zoom round trip"):
        attention_guided_fusion(image, image, np.zeros((5, 5), np.uint8))
