"""export/objectclear.py UNetWithObjectAttention and ObjectClearInpainter.object_attention, checked against
ObjectClear's own mechanism re-done here (objectclear.md 2.2, 3.4, 8.2):

* noise_pred must be the stock diffusers UNet forward, untouched by the re-plumbing hooks;
* obj_attn must be what ObjectClear reads: the probed layer switched to diffusers' classic AttnProcessor, the
  softmax probabilities `attn.get_attention_scores` returns during the stock forward, column 5 (the object token),
  viewed (B, heads, h/2, w/2) and averaged over heads;
* object_attention must be the bilinear (align_corners=False) upsample to latent size, min-max normalised.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor

from export.objectclear import UNetWithObjectAttention
from export.tiny import UNET_CONFIG
from pipelines.objectclear import ObjectClearInpainter
from reference.objectclear_reference import attention_map_from_probs

LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"  # objectclear.md 2.2
TOKEN = 5  # "object" in "<bos> remove the instance of object <eos>"
HEADS = 4  # tiny UNET_CONFIG attention_head_dim (1, 4, 8): block 1 has 4 heads (diffusers reads it as head count)
SHAPES = [(64, 64), (64, 86), (38, 58)]  # 86 and 58/38 latents: sides that are not multiples of 4


def _tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG).eval().requires_grad_(False)
    probed = unet.get_submodule(LAYER)
    probed.to_q.weight.mul_(4.0)  # as build_tiny_objectclear does: otherwise the token-5 softmax is nearly flat
    probed.to_k.weight.mul_(4.0)
    return unet


class Models:
    def __init__(self):
        unet = _tiny_unet()
        self.stock = copy.deepcopy(unet)  # copied before any hook is registered: the untouched diffusers UNet
        self.classic = copy.deepcopy(unet)  # ObjectClear's capture: classic processor + recorded probabilities
        self.wrapper = UNetWithObjectAttention(unet)
        self.captured: list[torch.Tensor] = []
        attn = self.classic.get_submodule(LAYER)
        attn.set_processor(AttnProcessor())
        original = attn.get_attention_scores

        def recording(*args, **kwargs):
            probs = original(*args, **kwargs)
            self.captured.append(probs)
            return probs

        attn.get_attention_scores = recording


@pytest.fixture(scope="module")
def models() -> Models:
    # module scope on purpose: one wrapper serves every shape in turn, so stale per-call state would show
    return Models()


def unet_inputs(batch: int, h: int, w: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 9, h, w, generator=g)
    sample[:, 4] = (torch.rand(batch, h, w, generator=g) > 0.5).float()  # the latent mask channel
    timestep = torch.tensor([951.0, 1.0, 501.0][:batch])
    ehs = torch.randn(batch, 77, UNET_CONFIG["cross_attention_dim"], generator=g)
    pooled_dim = UNET_CONFIG["projection_class_embeddings_input_dim"] - 6 * UNET_CONFIG["addition_time_embed_dim"]
    text_embeds = torch.randn(batch, pooled_dim, generator=g)
    time_ids = torch.tensor([[8.0 * h, 8.0 * w, 0, 0, 8.0 * h, 8.0 * w]] * batch)
    return sample, timestep, ehs, text_embeds, time_ids


def stock_forward(unet, sample, timestep, ehs, text_embeds, time_ids) -> torch.Tensor:
    return unet(sample, timestep, encoder_hidden_states=ehs,
                added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample


CASES = [(b, h, w) for (h, w) in SHAPES for b in (1, 2)]


@pytest.mark.parametrize("batch, h, w", CASES)
@torch.no_grad()
def test_wrapper_matches_stock_unet_and_objectclear_capture(models, batch, h, w):
    inputs = unet_inputs(batch, h, w, seed=h * 1000 + w + batch)
    noise_pred, obj_attn = models.wrapper(*inputs)

    # (a) noise_pred: the stock forward on an untouched copy
    expected = stock_forward(models.stock, *inputs)
    assert noise_pred.shape == expected.shape == (batch, 4, h, w)
    torch.testing.assert_close(noise_pred, expected, rtol=0, atol=1e-5)  # measured: 0.0 (bit-identical) at all 6 cases

    # (b) obj_attn: ObjectClear's mechanism, captured from the classic processor during a stock forward
    models.captured.clear()
    classic_pred = stock_forward(models.classic, *inputs)
    assert len(models.captured) == 1  # the layer ran once
    probs = models.captured[0]
    h2, w2 = (h + 1) // 2, (w + 1) // 2  # after the first stride-2 downsample
    assert probs.shape == (batch * HEADS, h2 * w2, 77)
    torch.testing.assert_close(probs.sum(-1), torch.ones(batch * HEADS, h2 * w2))  # they are probabilities
    expected_map = probs[:, :, TOKEN].reshape(batch, HEADS, h2, w2).mean(dim=1, keepdim=True)
    assert obj_attn.shape == (batch, 1, h2, w2) and obj_attn.dtype == torch.float32
    torch.testing.assert_close(obj_attn, expected_map, rtol=0, atol=1e-5)  # measured: 0.0 at all 6 cases

    # the capture run is the same network: the classic processor only changes float summation order
    torch.testing.assert_close(classic_pred, expected, rtol=0, atol=1e-5)  # measured: <= 1.3e-6

    # the comparison is meaningful: the map is not flat, and a neighbouring token would not pass
    assert obj_attn.max() > 3 * obj_attn.min() and obj_attn.max() > 2 / 77
    wrong_token = probs[:, :, TOKEN - 1].reshape(batch, HEADS, h2, w2).mean(dim=1, keepdim=True)
    assert (obj_attn - wrong_token).abs().max() > 1e-3
    if batch == 2:  # rows are kept apart (a batch/head mix-up in the reshape would swap or blend them)
        assert (obj_attn[0] - obj_attn[1]).abs().max() > 1e-3


@torch.no_grad()
def test_wrapper_leaves_stock_results_after_many_calls(models):
    """Calling at one size and then another must not leak the previous call's sizes into the next."""
    small, big = unet_inputs(1, 38, 58, seed=1), unet_inputs(2, 64, 86, seed=2)
    first = models.wrapper(*small)
    models.wrapper(*big)
    again = models.wrapper(*small)
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    torch.testing.assert_close(again[1], first[1], rtol=0, atol=0)
    assert again[1].shape == (1, 1, 19, 29)


# ----------------------------------------------------------------------------------------------------------------
# ObjectClearInpainter.object_attention
# ----------------------------------------------------------------------------------------------------------------

def _independent_object_attention(obj_attn: torch.Tensor, latent_size) -> torch.Tensor:
    """objectclear.md 3.4: bilinear, align_corners=False, to latent size; then (a - min) / (max - min + 1e-8)."""
    up = F.interpolate(obj_attn.double(), size=tuple(latent_size), mode="bilinear", align_corners=False)[0, 0]
    return ((up - up.min()) / (up.max() - up.min() + 1e-8)).float()


@pytest.mark.parametrize("h2, w2, h, w", [(32, 32, 64, 64), (32, 43, 64, 86), (19, 29, 38, 58), (5, 7, 10, 14)])
def test_object_attention_formula(h2, w2, h, w):
    obj_attn = torch.rand(1, 1, h2, w2, generator=torch.Generator().manual_seed(h2 * w2)) * 0.4 + 0.01
    got = ObjectClearInpainter.object_attention(obj_attn, (h, w))
    assert got.shape == (h, w)
    # measured: <= 1.8e-7 (float32 vs the float64 computation here)
    torch.testing.assert_close(got, _independent_object_attention(obj_attn, (h, w)), rtol=0, atol=1e-5)
    assert got.min().item() == pytest.approx(0.0, abs=1e-6) and got.max().item() == pytest.approx(1.0, abs=1e-6)
    # align_corners=False, not True: the two disagree on this map, so the formula is really pinned down
    corners = F.interpolate(obj_attn, size=(h, w), mode="bilinear", align_corners=True)[0, 0]
    corners = (corners - corners.min()) / (corners.max() - corners.min() + 1e-8)
    assert (got - corners).abs().max() > 1e-3


def test_object_attention_of_a_flat_map_is_zero_not_nan():
    got = ObjectClearInpainter.object_attention(torch.full((1, 1, 4, 6), 1 / 77), (8, 12))
    assert torch.isfinite(got).all() and got.abs().max() < 1e-4


@pytest.mark.parametrize("h, w", [(64, 64), (64, 86), (38, 58)])
@torch.no_grad()
def test_object_attention_equals_reference_map_from_the_capture(models, h, w):
    """End to end against the independent reference: wrapper obj_attn of the conditional (last) row through
    object_attention == reference attention_map_from_probs on ObjectClear's captured probabilities."""
    inputs = unet_inputs(2, h, w, seed=7 + h + w)
    _, obj_attn = models.wrapper(*inputs)
    models.captured.clear()
    stock_forward(models.classic, *inputs)
    expected = attention_map_from_probs(models.captured, HEADS, (h, w), row=1)
    got = ObjectClearInpainter.object_attention(obj_attn[-1:], (h, w))
    assert got.shape == expected.shape == (h, w)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)  # measured: 0.0
