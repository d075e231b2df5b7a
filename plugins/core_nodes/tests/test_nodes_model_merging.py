"""The merging, saving, LoRA extraction and extra loader nodes through the server, on the tiny checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import hypernetwork_sd, tiny_lora_sd  # noqa: E402
from _random_weights import write  # noqa: E402
from _vision_files import link, vit_l_file  # noqa: E402

from comfy_kernel_core_nodes.nodes.model_merging_specific import FAMILIES  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(graph_server, sd15_tiny_checkpoint):
    vit = vit_l_file()
    link(sd15_tiny_checkpoint, graph_server.models_dir("checkpoints") / "tiny.safetensors")
    link(vit, graph_server.models_dir("clip_vision") / "vit_l.safetensors")
    write(graph_server.models_dir("loras") / "tiny_lora.safetensors", tiny_lora_sd())
    import torch

    torch.save(hypernetwork_sd(), graph_server.models_dir("hypernetworks") / "hn.pt")
    probes = graph_server.input_dir / "probes"
    probes.mkdir(parents=True, exist_ok=True)
    np.savez(probes / "lora.npz", **{k: v.numpy() for k, v in tiny_lora_sd().items()})
    return graph_server


def _node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def _sample(name: str, model, clip=("ckpt", 1), vae=("ckpt", 2)) -> dict:
    return {
        f"pos_{name}": _node("CLIPTextEncode", clip=list(clip), text="a red cube"),
        f"neg_{name}": _node("CLIPTextEncode", clip=list(clip), text=""),
        f"ks_{name}": _node("KSampler", model=list(model), seed=3, steps=3, cfg=5.0, sampler_name="euler",
                            scheduler="normal", positive=[f"pos_{name}", 0], negative=[f"neg_{name}", 0],
                            latent_image=["lat", 0], denoise=1.0),
        f"dec_{name}": _node("VAEDecode", samples=[f"ks_{name}", 0], vae=list(vae)),
        f"p_{name}": _node("TestProbe", value=[f"dec_{name}", 0], name=name),
    }


def _base() -> dict:
    return {
        "ckpt": _node("CheckpointLoaderSimple", ckpt_name="tiny.safetensors"),
        "lat": _node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "lora": _node("LoraLoader", model=["ckpt", 0], clip=["ckpt", 1], lora_name="tiny_lora.safetensors",
                      strength_model=0.9, strength_clip=0.7),
    }


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_merge_and_save_nodes(server):
    g = _base()
    g.update({
        "simple": _node("ModelMergeSimple", model1=["ckpt", 0], model2=["lora", 0], ratio=0.4),
        "blocks": _node("ModelMergeBlocks", model1=["ckpt", 0], model2=["lora", 0], input=0.0, middle=1.0,
                        out=1.0),
        "sub": _node("ModelMergeSubtract", model1=["lora", 0], model2=["ckpt", 0], multiplier=1.0),
        "add": _node("ModelMergeAdd", model1=["ckpt", 0], model2=["sub", 0]),
        "clip_simple": _node("CLIPMergeSimple", clip1=["ckpt", 1], clip2=["lora", 1], ratio=0.5),
        "clip_sub": _node("CLIPMergeSubtract", clip1=["lora", 1], clip2=["ckpt", 1], multiplier=1.0),
        "clip_add": _node("CLIPMergeAdd", clip1=["ckpt", 1], clip2=["clip_sub", 0]),
        "vision": _node("CLIPVisionLoader", clip_name="vit_l.safetensors"),
        "save_ckpt": _node("CheckpointSave", model=["simple", 0], clip=["clip_simple", 0], vae=["ckpt", 2],
                           filename_prefix="checkpoints/merged"),
        "save_model": _node("ModelSave", model=["blocks", 0], filename_prefix="diffusion_models/blocks"),
        "save_clip": _node("CLIPSave", clip=["clip_simple", 0], filename_prefix="clip/merged"),
        "save_vae": _node("VAESave", vae=["ckpt", 2], filename_prefix="vae/tiny"),
        "save_image_only": _node("ImageOnlyCheckpointSave", model=["ckpt", 0], clip_vision=["vision", 0],
                                 vae=["ckpt", 2], filename_prefix="checkpoints/image_only"),
        "save_lora": _node("LoraSave", filename_prefix="loras/extracted", rank=8, lora_type="standard",
                           bias_diff=True, model_diff=["sub", 0], text_encoder_diff=["clip_sub", 0]),
    })
    g.update(_sample("plain", ("ckpt", 0)))
    g.update(_sample("lora", ("lora", 0), clip=("lora", 1)))
    g.update(_sample("simple", ("simple", 0), clip=("clip_simple", 0)))
    g.update(_sample("blocks", ("blocks", 0)))
    g.update(_sample("add", ("add", 0), clip=("clip_add", 0)))
    out = server.run(g, timeout=1800)
    plain, lora = out["plain"], out["lora"]
    assert np.abs(lora - plain).max() > 1e-3
    assert np.allclose(out["add"], lora, atol=2e-2)  # model + (lora - model) is the LoRA'd model, up to fp16
    for name in ("simple", "blocks"):
        assert np.abs(out[name] - plain).max() > 1e-3 and np.abs(out[name] - lora).max() > 1e-3, name

    output = server.output_dir
    for path in ("checkpoints/merged_00001_.safetensors", "diffusion_models/blocks_00001_.safetensors",
                 "clip/merged_clip_l_00001_.safetensors", "vae/tiny_00001_.safetensors",
                 "checkpoints/image_only_00001_.safetensors", "loras/extracted_00001_.safetensors"):
        assert (output / path).is_file(), path
    image_only = _safetensors_keys(output / "checkpoints/image_only_00001_.safetensors")
    assert any(k.startswith("model.diffusion_model.") for k in image_only)
    assert any(k.startswith("first_stage_model.") for k in image_only)
    assert "vision_model.embeddings.patch_embedding.weight" in image_only
    assert not any(k.startswith("cond_stage_model.") for k in image_only)
    lora_keys = _safetensors_keys(output / "loras/extracted_00001_.safetensors")
    assert "diffusion_model.input_blocks.1.1.proj_in.lora_up.weight" in lora_keys
    assert "text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.lora_down.weight" in lora_keys

    # the saved merge and the extracted LoRA load back through the usual loaders
    link(output / "checkpoints/merged_00001_.safetensors", server.models_dir("checkpoints") / "merged.safetensors")
    link(output / "loras/extracted_00001_.safetensors", server.models_dir("loras") / "extracted.safetensors")
    g2 = _base()
    g2["merged"] = _node("CheckpointLoaderSimple", ckpt_name="merged.safetensors")
    g2["simple"] = g["simple"]
    g2["clip_simple"] = g["clip_simple"]
    g2["extracted"] = _node("LoraLoader", model=["ckpt", 0], clip=["ckpt", 1], lora_name="extracted.safetensors",
                            strength_model=1.0, strength_clip=1.0)
    g2.update(_sample("simple", ("simple", 0), clip=("clip_simple", 0)))
    g2.update(_sample("loaded", ("merged", 0), clip=("merged", 1), vae=("merged", 2)))
    g2.update(_sample("extracted", ("extracted", 0), clip=("extracted", 1)))
    g2.update(_sample("plain", ("ckpt", 0)))
    out2 = server.run(g2, timeout=1800)
    assert np.array_equal(out2["loaded"], out2["simple"])
    assert np.array_equal(out2["simple"], out["simple"])
    # a rank-8 LoRA of a rank-4 difference: close to the LoRA'd model, far from the plain one
    assert np.abs(out2["extracted"] - lora).max() < 0.5 * np.abs(plain - lora).max()


def test_block_ratio_nodes(server):
    g = _base()
    previous = ["ckpt", 0]
    for name, (ratios, _) in FAMILIES.items():  # every family node at ratio 1: model1 unchanged
        g[name] = _node(name, model1=previous, model2=["lora", 0], **{r: 1.0 for r in ratios})
        previous = [name, 0]
    sd1_ratios = {r: 1.0 for r in FAMILIES["ModelMergeSD1"][0]}
    g["sd1_input"] = _node("ModelMergeSD1", model1=["ckpt", 0], model2=["lora", 0],
                           **{**sd1_ratios, "input_blocks.1.": 0.0})
    g["sd1_out"] = _node("ModelMergeSD1", model1=["ckpt", 0], model2=["lora", 0], **{**sd1_ratios, "out.": 0.0})
    g.update(_sample("plain", ("ckpt", 0)))
    g.update(_sample("chain", previous))
    g.update(_sample("sd1_input", ("sd1_input", 0)))
    g.update(_sample("sd1_out", ("sd1_out", 0)))
    out = server.run(g, timeout=1800)
    assert np.array_equal(out["chain"], out["plain"])
    assert np.abs(out["sd1_input"] - out["plain"]).max() > 1e-3  # the LoRA touches input_blocks.1
    assert np.array_equal(out["sd1_out"], out["plain"])  # and nothing under out.


def test_hypernetwork_and_lora_model_loaders(server):
    g = _base()
    g.update({
        "hn": _node("HypernetworkLoader", model=["ckpt", 0], hypernetwork_name="hn.pt", strength=0.8),
        "hn_off": _node("HypernetworkLoader", model=["ckpt", 0], hypernetwork_name="hn.pt", strength=0.0),
        "lora_tensors": _node("TestLoad", name="lora.npz"),
        "lora_model": _node("LoraModelLoader", model=["ckpt", 0], lora=["lora_tensors", 0], strength_model=0.9),
        "lora_file": _node("LoraLoaderModelOnly", model=["ckpt", 0], lora_name="tiny_lora.safetensors",
                           strength_model=0.9),
    })
    for name in ("hn", "hn_off", "lora_model", "lora_file"):
        g.update(_sample(name, (name, 0)))
    g.update(_sample("plain", ("ckpt", 0)))
    out = server.run(g, timeout=1800)
    assert np.array_equal(out["hn_off"], out["plain"])
    assert np.abs(out["hn"] - out["plain"]).max() > 1e-3
    assert np.array_equal(out["lora_model"], out["lora_file"])
    assert np.abs(out["lora_model"] - out["plain"]).max() > 1e-3
