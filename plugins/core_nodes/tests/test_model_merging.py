"""Model merging, LoRA extraction and saving: ComfyUI 0.3.64's merged weights and file layouts, and round trips.

``data/model_merging``: see data/model_merging/README.md.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import tiny_lora_sd  # noqa: E402
from _random_weights import write  # noqa: E402
from _vision_files import link  # noqa: E402

from comfy_kernel_core_nodes.nodes import lora_extract  # noqa: E402
from comfy_kernel_core_nodes.nodes import model_merging as mm  # noqa: E402
from comfy_kernel_core_nodes.nodes import model_merging_specific as ms  # noqa: E402

DATA = Path(__file__).parent / "data" / "model_merging"
EXPECTED = dict(np.load(DATA / "merges.npz"))
LAYOUTS = json.loads(gzip.open(DATA / "layouts.json.gz").read())
PROMPT = {"1": {"class_type": "X", "inputs": {}}}
EXTRA = {"workflow": {"nodes": []}}


@pytest.fixture(scope="module")
def models(tmp_path_factory, sd15_tiny_checkpoint):
    from _nodes import use_base

    from comfy_kernel_core_nodes.nodes import loaders
    from comfy_kernel_core_nodes.nodes.lora import LoraLoader

    base = tmp_path_factory.mktemp("merging")
    link(sd15_tiny_checkpoint, base / "models" / "checkpoints" / "tiny.safetensors")
    write(base / "models" / "loras" / "tiny_lora.safetensors", tiny_lora_sd())
    use_base(base)
    model, clip, vae = loaders.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    model2, clip2 = LoraLoader().load_lora(model, clip, "tiny_lora.safetensors", 0.9, 0.7)
    return base, model, clip, vae, model2, clip2


def _merges(model, model2) -> dict:
    sd1_ratios = {k: 0.5 for k in ms.FAMILIES["ModelMergeSD1"][0]}
    sd1_ratios.update({"input_blocks.1.": 0.1, "middle_block.0.": 0.8, "out.": 0.25})
    sd1 = next(d.cls for d in ms.NODES if d.name == "ModelMergeSD1")
    return {
        "simple": mm.ModelMergeSimple().merge(model, model2, 0.3)[0],
        "subtract": mm.ModelMergeSubtract().merge(model2, model, 1.0)[0],
        "add": mm.ModelMergeAdd().merge(model, model2)[0],
        "blocks": mm.ModelMergeBlocks().merge(model, model2, input=0.2, middle=0.6, out=0.9)[0],
        "sd1": sd1().merge(model, model2, **sd1_ratios)[0],
    }


def _clip_merges(clip, clip2) -> dict:
    return {
        "clip_simple": mm.CLIPMergeSimple().merge(clip, clip2, 0.4)[0],
        "clip_subtract": mm.CLIPMergeSubtract().merge(clip2, clip, 2.0)[0],
        "clip_add": mm.CLIPMergeAdd().merge(clip, clip2)[0],
    }


def _expected(prefix: str) -> dict[str, np.ndarray]:
    return {k.split(":", 1)[1]: v for k, v in EXPECTED.items() if k.startswith(prefix + ":")}


@pytest.mark.usefixtures("single_torch_thread")
def test_model_merges_give_comfyuis_weights(models):
    _, model, _, _, model2, _ = models
    for name, merged in _merges(model, model2).items():
        expected = _expected(name)
        assert expected, name
        sd = merged.model_state_dict("diffusion_model.")
        for key, values in expected.items():
            got = sd[key].float().flatten()[:values.size].numpy()
            assert np.allclose(got, values, rtol=0, atol=1e-6), (name, key, np.abs(got - values).max())


@pytest.mark.usefixtures("single_torch_thread")
def test_merges_differ_by_block_and_leave_the_inputs_alone(models):
    _, model, _, _, model2, _ = models
    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    before = model.model_state_dict("diffusion_model.")[key].clone()
    merges = _merges(model, model2)
    blocks = merges["blocks"].model_state_dict("diffusion_model.")
    other = model2.model_state_dict("diffusion_model.")[key]
    mixed = before.float() * 0.2 + other.float() * 0.8  # the ratio is model1's share
    assert torch.allclose(blocks[key].float(), mixed, atol=1e-3)
    assert not model.patches and torch.equal(model.model_state_dict("diffusion_model.")[key], before)
    # the same strengths on different blocks are different weights
    sd1 = next(d.cls for d in ms.NODES if d.name == "ModelMergeSD1")
    ones = {k: 1.0 for k in ms.FAMILIES["ModelMergeSD1"][0]}
    first = sd1().merge(model, model2, **{**ones, "input_blocks.1.": 0.0})[0]
    last = sd1().merge(model, model2, **{**ones, "out.": 0.0})[0]
    assert first.weights_key() != last.weights_key()
    assert not torch.equal(first.model_state_dict("diffusion_model.")[key], before)
    assert torch.equal(last.model_state_dict("diffusion_model.")[key], before)
    # merging a model with itself at any ratio changes nothing
    same = mm.ModelMergeSimple().merge(model, model, 0.37)[0].model_state_dict("diffusion_model.")
    assert torch.equal(same[key], before)


@pytest.mark.usefixtures("single_torch_thread")
def test_clip_merges_give_comfyuis_weights(models):
    _, _, clip, _, _, clip2 = models
    for name, merged in _clip_merges(clip, clip2).items():
        expected = _expected(name)
        assert expected, name
        sd = merged.patcher.model_state_dict()
        for key, values in expected.items():
            got = sd[key].float().flatten()[:values.size].numpy()
            assert np.allclose(got, values, rtol=0, atol=1e-6), (name, key, np.abs(got - values).max())


@pytest.mark.usefixtures("single_torch_thread")
def test_lora_extraction_is_comfyuis(models):
    _, model, clip, _, model2, clip2 = models
    diff = mm.ModelMergeSubtract().merge(model2, model, 1.0)[0].model_state_dict("diffusion_model.")
    clip_key = "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    clip_diff = mm.CLIPMergeSubtract().merge(clip2, clip, 2.0)[0].patcher.model_state_dict()[clip_key]
    out: dict = {}
    for key, weight in (("diffusion_model.input_blocks.1.1.proj_in.weight", diff),
                        ("diffusion_model.middle_block.0.in_layers.2.weight", diff),
                        ("text_encoders." + clip_key, {"text_encoders." + clip_key: clip_diff})):
        up, down = lora_extract.extract_lora(weight[key], 4)
        out[key[:-len(".weight")] + ".lora_up.weight"] = up.half()
        out[key[:-len(".weight")] + ".lora_down.weight"] = down.half()
    for key, values in _expected("extract").items():
        got = out[key].float().numpy()
        assert got.shape == values.shape, key
        assert np.allclose(got, values, atol=2e-3), (key, np.abs(got - values).max())
    # the LoRA reproduces the difference it was taken from, up to its rank
    key = "diffusion_model.input_blocks.1.1.proj_in"
    product = out[f"{key}.lora_up.weight"].float().flatten(1) @ out[f"{key}.lora_down.weight"].float().flatten(1)
    target = diff[key + ".weight"].float().flatten(1)
    assert torch.linalg.norm(product - target) < 0.5 * torch.linalg.norm(target)
    up, down = lora_extract.extract_lora(torch.zeros(8, 6, 3, 3), 4)  # an unchanged weight: zero factors
    assert up.shape == (8, 4, 1, 1) and down.shape == (4, 6, 3, 3) and not up.any() and not down.any()


def _layout(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {"metadata": f.metadata(), "tensors": {k: [str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())]
                                                      for k in f.keys()}}


def test_saved_files_have_comfyuis_layout_and_metadata(models):
    base, model, clip, vae, _, _ = models
    mm.CheckpointSave().save(model, clip, vae, "checkpoints/cap", PROMPT, EXTRA)
    mm.ModelSave().save(model, "diffusion_models/cap", PROMPT, EXTRA)
    mm.CLIPSave().save(clip, "clip/cap", PROMPT, EXTRA)
    mm.VAESave().save(vae, "vae/cap", PROMPT, EXTRA)
    output = base / "output"
    for name, expected in LAYOUTS.items():
        got = _layout(output / name)
        assert got["metadata"] == expected["metadata"], name
        missing = sorted(set(expected["tensors"]) - set(got["tensors"]))
        extra = sorted(set(got["tensors"]) - set(expected["tensors"]))
        assert not missing and not extra, (name, missing[:5], extra[:5])
        assert got["tensors"] == expected["tensors"], name
    # each file loads back as the part it was saved from
    from comfy_kernel_core_nodes.nodes import conditioning, loaders

    for folder, name in (("clip", "cap_clip_l_00001_"), ("vae", "cap_00001_"), ("diffusion_models", "cap_00001_")):
        link(output / folder / f"{name}.safetensors", base / "models" / folder / f"saved_{folder}.safetensors")
    (saved_clip,) = loaders.CLIPLoader().load_clip("saved_clip.safetensors", "stable_diffusion")
    encode = conditioning.CLIPTextEncode().encode
    assert torch.equal(encode(saved_clip, "a cat")[0][0][0], encode(clip, "a cat")[0][0][0])
    (saved_vae,) = loaders.VAELoader().load_vae("saved_vae.safetensors")
    assert saved_vae.get_sd().keys() == vae.get_sd().keys()
    (saved_unet,) = loaders.UNETLoader().load_unet("saved_diffusion_models.safetensors")
    key = "diffusion_model.out.2.weight"
    assert torch.equal(saved_unet.model_state_dict("diffusion_model.")[key], model.model_state_dict("diffusion_model.")[key])
    # the counter moves on, as for images
    mm.VAESave().save(vae, "vae/cap", None, None)
    assert (output / "vae" / "cap_00002_.safetensors").exists()


@pytest.mark.usefixtures("single_torch_thread")
def test_a_saved_merge_loads_back_as_the_same_model(models):
    from comfy_kernel_core_nodes.nodes import conditioning, ksampler, latent, loaders

    base, model, clip, vae, model2, clip2 = models
    merged = mm.ModelMergeSimple().merge(model, model2, 0.6)[0]
    merged_clip = mm.CLIPMergeSimple().merge(clip, clip2, 0.5)[0]
    path = mm.save_checkpoint(merged, clip=merged_clip, vae=vae, filename_prefix="checkpoints/roundtrip")
    link(Path(path), base / "models" / "checkpoints" / "roundtrip.safetensors")
    loaded, loaded_clip, loaded_vae = loaders.CheckpointLoaderSimple().load_checkpoint("roundtrip.safetensors")

    def image(m, c, v):
        pos = conditioning.CLIPTextEncode().encode(c, "a red cube")[0]
        neg = conditioning.CLIPTextEncode().encode(c, "")[0]
        lat = latent.EmptyLatentImage().generate(64, 64, 1)[0]
        samples = ksampler.KSampler().sample(m, 3, 3, 5.0, "euler", "normal", pos, neg, lat)[0]
        return v.decode(samples["samples"])

    original = image(merged, merged_clip, vae)
    assert torch.equal(image(loaded, loaded_clip, loaded_vae), original)
    assert not torch.equal(image(model, clip, vae), original)


@pytest.mark.usefixtures("single_torch_thread")
def test_an_extracted_lora_loads_and_applies(models):
    from comfy_kernel_core_nodes.nodes.lora import LoraLoaderModelOnly

    base, model, _, _, model2, _ = models
    diff = mm.ModelMergeSubtract().merge(model2, model, 1.0)[0]
    lora_extract.LoraSave.execute("loras/extracted", 16, "full_diff", True, model_diff=diff)
    saved = base / "output" / "loras" / "extracted_00001_.safetensors"
    link(saved, base / "models" / "loras" / "extracted.safetensors")
    applied = LoraLoaderModelOnly().load_lora_model_only(model, "extracted.safetensors", 1.0)[0]
    key = "diffusion_model.middle_block.0.in_layers.2.weight"
    target = model2.model_state_dict("diffusion_model.")[key].float()
    got = applied.model_state_dict("diffusion_model.")[key].float()
    assert torch.allclose(got, target, atol=2e-3)  # full_diff: the difference in fp16, added back


def test_family_nodes_list_comfyuis_blocks():
    sdxl = next(d.cls for d in ms.NODES if d.name == "ModelMergeSDXL")
    names = sdxl.ratio_names()
    assert names[:3] == ["time_embed.", "label_emb.", "input_blocks.0"] and names[-1] == "out."
    assert len(ms.NODES) == len(ms.FAMILIES) == 15


@pytest.mark.usefixtures("single_torch_thread")
def test_an_sd2_v_checkpoint_saves_in_its_own_layout(tmp_path):
    from safetensors import safe_open
    from test_family_sd2 import _checkpoint

    from comfy_kernel_core_nodes.model.loading import load_checkpoint
    from comfy_kernel_core_nodes.model.saving import checkpoint_metadata, save_file, state_dict_for_saving

    source = _checkpoint(tmp_path, v_prediction=True)
    model, clip, vae = load_checkpoint(str(source))
    metadata, extra = checkpoint_metadata(model, "t", None, None, True)
    assert metadata == {"modelspec.predict_key": "v"} and set(extra) == {"v_pred"}
    saved = tmp_path / "saved.safetensors"
    save_file({**state_dict_for_saving(model, clip, vae), **extra}, str(saved), metadata)
    with safe_open(str(source), "pt") as f:
        original = set(f.keys())
    with safe_open(str(saved), "pt") as f:
        written = set(f.keys())
    assert written - original == {"v_pred"}
    # not written: a bias outside this small UNet's layout (the file carries it for detection), and the two
    # OpenCLIP-H tensors SD2 never uses, which the text encoder does not keep (ComfyUI writes them)
    assert original - written == {"model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias",
                                  "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale"}
    model2, clip2, _ = load_checkpoint(str(saved))
    # SD2 is told v-prediction by output block 11's norm bias (ComfyUI ignores the v_pred marker for SD2);
    # this small UNet has no block 11, so the file loads back as the family, not the prediction type
    assert model2.model.model_config.family == "sd2"
    tokens = clip.tokenize("a photo of a cat")
    assert torch.equal(clip2.encode_from_tokens(tokens), clip.encode_from_tokens(tokens))
    key = "diffusion_model.output_blocks.3.1.transformer_blocks.0.norm1.bias"
    assert torch.equal(model2.model_state_dict("diffusion_model.")[key], model.model_state_dict("diffusion_model.")[key])
