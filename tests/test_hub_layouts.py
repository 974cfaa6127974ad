"""The exporters read the five Hugging Face repositories as they are published (export/hub.py), checked on the tiny
checkpoints laid out like them (export/tiny_hub.py): the folders `make export` exports with
`python -m export <pipeline> --source <folder>`, as a user exports the real ones. Every model an exporter loads
from a layout must equal what it loads from the plain save_pretrained checkpoint: the fp32 files (not the fp16
variants beside them), never the NaN-filled single-file duplicates, the same tokens and prompt conditioning."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler
from PIL import Image
from safetensors.torch import load_file
from transformers import Sam3Processor

from export.hub import HUB
from export.objectclear import load_objectclear, prompt_conditioning
from export.sam3 import load_sam3
from export.tiny_hub import TINY_HUB_ROOT, layout_difference
from server.launcher import REPO_ROOT

FLUX = ["flux-schnell", "flux-dev", "flux-fill"]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys(), what
    different = [k for k in left if not torch.equal(left[k], right[k])]
    assert not different, f"{what}: {len(different)} tensors differ, e.g. {different[:3]}"


# -- the layouts are the repositories' ----------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", list(HUB))
def test_layout_has_the_repositorys_files(hub_layouts, pipeline):
    assert layout_difference(hub_layouts[pipeline], pipeline) == (set(), set())


def test_objectclear_layout_keys(hub_layouts):
    folder = hub_layouts["objectclear"]
    postfuse = json.loads((folder / "postfuse_module" / "config.json").read_text())
    assert set(postfuse) == {"_class_name", "embed_dim", "embed_dim_img"}  # what made PostfuseModule(**config) fail
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "ObjectClearPipeline"
    assert {"decay", "optimization_step", "use_ema_warmup"} <= set(json.loads((folder / "unet/config.json").read_text()))
    assert json.loads((folder / "text_encoder" / "config.json").read_text())["eos_token_id"] == 2
    assert "__type" in (folder / "tokenizer" / "tokenizer_config.json").read_text()
    for fp16 in folder.rglob("*.fp16.safetensors"):  # the variants are real casts, so reading them would show
        full = load_file(str(fp16.with_name(fp16.name.replace(".fp16", ""))))
        half = load_file(str(fp16))
        assert all(half[k].dtype == torch.float16 for k in half)
        assert any(not torch.equal(half[k].float(), full[k]) for k in full), fp16


def test_sam3_layout_is_a_video_model(hub_layouts):
    folder = hub_layouts["sam3"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "sam3_video" and config["detector_config"]["model_type"] == "sam3"
    prefixes = {key.split(".")[0] for key in load_file(str(folder / "model.safetensors"))}
    assert prefixes == {"detector_model", "tracker_model", "tracker_neck"}


@pytest.mark.parametrize("pipeline", FLUX)
def test_flux_layout_shards_and_duplicates(hub_layouts, pipeline):
    folder = hub_layouts[pipeline]
    index = json.loads((folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3
    index = json.loads((folder / "text_encoder_2" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2
    for duplicate in (HUB[pipeline].skip[0], "ae.safetensors"):
        tensors = load_file(str(folder / duplicate))
        assert tensors and all(t.isnan().all() for t in tensors.values()), duplicate  # poison: never to be read
    assert json.loads((folder / "text_encoder" / "config.json").read_text())["torch_dtype"] == "bfloat16"


# -- the loaders read them as the plain checkpoints ----------------------------------------------------------------
def test_objectclear_loads_as_the_plain_checkpoint(hub_layouts, objectclear_checkpoint):
    want, got = load_objectclear(objectclear_checkpoint), load_objectclear(hub_layouts["objectclear"])
    for name in ("unet", "vae", "clip", "postfuse"):
        assert_same_weights(getattr(want, name), getattr(got, name), name)
    for index in (0, 1):
        assert_same_weights(want.text_encoders[index], got.text_encoders[index], f"text_encoder {index}")
    want_conditioning, got_conditioning = prompt_conditioning(want), prompt_conditioning(got)
    for key in want_conditioning:  # tokenizers (old tokenizer_config) and pooling at eos id 2 change nothing
        np.testing.assert_array_equal(got_conditioning[key], want_conditioning[key], err_msg=key)
    # the Hub config has keys Euler ignores (clip_sample, skip_prk_steps, ...) and lacks newer ones: the same schedule
    schedules = [EulerDiscreteScheduler.from_config(m.scheduler_config) for m in (want, got)]
    for schedule in schedules:
        schedule.set_timesteps(20)
    assert torch.equal(schedules[0].timesteps, schedules[1].timesteps)
    assert torch.equal(schedules[0].sigmas, schedules[1].sigmas)


def test_sam3_loads_as_the_plain_checkpoint(hub_layouts, sam3_checkpoint):
    assert_same_weights(load_sam3(sam3_checkpoint), load_sam3(hub_layouts["sam3"]), "Sam3Model")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    want, got = (Sam3Processor.from_pretrained(folder)(images=image, text="a cat", return_tensors="pt")
                 for folder in (sam3_checkpoint, hub_layouts["sam3"]))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("pipeline", FLUX)
def test_flux_loads_as_the_plain_checkpoint(hub_layouts, flux_checkpoints, pipeline):
    want = DiffusionPipeline.from_pretrained(flux_checkpoints[pipeline.split("-")[1]], dtype=torch.float32)
    got = DiffusionPipeline.from_pretrained(hub_layouts[pipeline], dtype=torch.float32)
    assert type(got) is type(want)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        assert_same_weights(getattr(want, name), getattr(got, name), name)
    prompt = "a photo of a cat holding a sign"
    with torch.no_grad():
        (clip, t5), (hub_clip, hub_t5) = [
            [pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids,
             pipe.tokenizer_2(prompt, padding="max_length", max_length=32, return_tensors="pt").input_ids]
            for pipe in (want, got)]
        assert torch.equal(clip, hub_clip) and torch.equal(t5, hub_t5)
        # the Hub CLIP config's legacy eos_token_id 2 pools at the argmax token: the same row here
        assert torch.equal(want.text_encoder(clip).pooler_output, got.text_encoder(hub_clip).pooler_output)


# -- downloads: what is skipped, and that a filtered copy still loads ----------------------------------------------
SKIPPED = {"objectclear": r".*\.fp16\.safetensors", "sam3": r"sam3\.pt",
           "flux-schnell": r"flux1-schnell\.safetensors|ae\.safetensors|schnell_grid\.jpeg",
           "flux-dev": r"flux1-dev\.safetensors|ae\.safetensors", "flux-fill": r"flux1-fill-dev\.safetensors|ae\.safetensors"}


@pytest.mark.parametrize("pipeline", list(HUB))
def test_download_skips_only_duplicates_and_variants(hub_layouts, tmp_path, pipeline):
    repo = HUB[pipeline]
    assert {name for name in repo.files if not repo.needed(name)} == {
        name for name in repo.files if re.fullmatch(SKIPPED[pipeline], name)}
    source, copy = hub_layouts[pipeline], tmp_path / "download"
    for name in filter(repo.needed, repo.files):  # what snapshot_download(ignore_patterns=repo.skip) fetches
        if (source / name).exists():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, copy / name)
    if pipeline == "objectclear":
        load_objectclear(copy)
    elif pipeline == "sam3":
        load_sam3(copy)
        Sam3Processor.from_pretrained(copy)
    else:
        DiffusionPipeline.from_pretrained(copy, dtype=torch.float32)


def test_a_folder_with_only_the_fp16_variant_is_read_upcast(hub_layouts, tmp_path, capsys):
    folder = tmp_path / "ObjectClear"
    shutil.copytree(hub_layouts["objectclear"], folder, ignore=lambda _, names: [
        n for n in names if n.endswith(".safetensors") and not n.endswith(".fp16.safetensors")])
    models = load_objectclear(folder)
    assert "only the fp16 variant" in capsys.readouterr().out
    half = load_file(str(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    unet = models.unet.state_dict()
    assert all(unet[k].dtype == torch.float32 and torch.equal(unet[k], half[k].float()) for k in half)


# -- CI exports them as a user would ------------------------------------------------------------------------------
def test_make_export_runs_the_users_command_on_each_layout():
    """Each network target of `make export` (what CI runs) is `python -m export <pipeline> --source <layout>`."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    (hub_root,) = re.findall(r"^TINY_HUB := (\S+)$", makefile, re.M)
    assert REPO_ROOT / hub_root == TINY_HUB_ROOT
    commands = re.findall(r"^\t\$\(PY\) -m export (\S+) --source \$\(TINY_HUB\)/(\S+)$", makefile, re.M)
    assert {pipeline: repo for pipeline, repo in commands} == {
        p: HUB[p].repo_id for p in HUB}


def test_the_hub_check_says_what_stops_an_export(monkeypatch, tmp_path, capsys):
    """`make demo SOURCE=hub` starts with `python -m export.hub check`: offline, it names each unreachable repository,
    and the licences the user would accept, and fails before downloading anything."""
    import huggingface_hub.constants

    from export.hub import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["check", "objectclear", "flux-fill", "--repository", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "NTU S-Lab License 1.0 (non-commercial)" in out and "FLUX.1 [dev] Non-Commercial License" in out
    assert "jixin0101/ObjectClear: the Hugging Face Hub cannot be reached" in err
    assert "black-forest-labs/FLUX.1-Fill-dev: the Hugging Face Hub cannot be reached" in err
    assert not any(tmp_path.iterdir())  # nothing downloaded or written
