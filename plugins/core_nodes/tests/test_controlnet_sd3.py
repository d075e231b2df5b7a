"""Stability's SD3.5 ControlNets: the released key layout loaded without missing weights, the network against
diffusers' SD3ControlNetModel, its residuals in the MMDiT's joint blocks, and the sd3.5_large_depth template
(Lotus depth -> ControlNet -> SD3.5 Large) through the server.

Files come from _files_sd3_controlnet.py (diffusers' network, Stability's names) and _sd3.py (a 3-block MMDiT:
the ControlNet's 2 blocks each feed 2 of its joint blocks).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _files_lotus import place_lotus_depth_files  # noqa: E402
from _files_sd3_controlnet import diffusers_controlnet, write_sd35_controlnet  # noqa: E402
from _sd3 import checkpoint_file, mmdit_params, mmdit_state_dict  # noqa: E402
from _templates import template  # noqa: E402
from test_family_flux_server import _saved_images, _shrink  # noqa: E402

from comfy_kernel_core_nodes.families.sd3.controlnet import (  # noqa: E402
    SD35ControlNet,
    SD35ControlParams,
    borrowed_embedders,
    rename_key,
    sincos_positions,
)
from comfy_kernel_core_nodes.families.sd3.mmdit import MMDiT, timestep_embedding  # noqa: E402
from comfy_kernel_core_nodes.model.attention import optimized_attention  # noqa: E402
from comfy_kernel_core_nodes.model.controlnet import ControlNetSD35, load_controlnet  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _place_checkpoint(target: Path) -> None:
    """The cached tiny SD3.5 Large checkpoint, hard-linked once into the (session-wide) server's models."""
    if not target.exists():
        os.link(checkpoint_file(), target)


@pytest.fixture(scope="module")
def control_file(tmp_path_factory) -> Path:
    return write_sd35_controlnet(tmp_path_factory.mktemp("sd35cn") / "sd3.5_large_controlnet_depth.safetensors")


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(1, 16, 8, 12, generator=g), "hint": torch.randn(1, 16, 8, 12, generator=g),
            "y": torch.randn(1, 2048, generator=g), "timesteps": torch.tensor([700.0]),
            "embedder": {"x.weight": torch.randn(192, 16, 2, 2, generator=g) * 0.1,
                         "x.bias": torch.randn(192, generator=g) * 0.1}}


def test_released_layout_loads_with_every_tensor_placed(control_file):
    from safetensors.torch import load_file

    control = load_controlnet(str(control_file))
    assert isinstance(control, ControlNetSD35) and control.compression_ratio == 1
    assert control.latent_format.scale_factor == 1.5305
    net = control.control_model
    p = net.params
    assert (p.blocks, p.main_depth, p.double_y_emb, p.hidden_size) == (2, 3, False, 192)
    stored = load_file(str(control_file))
    placed = net.state_dict()
    assert torch.equal(placed["t_embedder.mlp.0.weight"], stored["time_text_embed.timestep_embedder.linear_1.weight"])
    assert torch.equal(placed["transformer_blocks.1.attn.qkv.weight"], stored["transformer_blocks.1.attn.qkv.weight"])
    assert set(placed) == {rename_key(k) for k in stored} - {"control_type"}
    # control_type 2 (depth): the hint is inverted before the VAE encodes it
    assert torch.equal(control.preprocess_image(torch.tensor([0.25])), torch.tensor([0.75]))


def test_blocks_match_diffusers_sd3_controlnet(control_file):
    reference = diffusers_controlnet()
    control = load_controlnet(str(control_file))
    a = _inputs()
    ours = control.control_model(**a)["output"]
    assert len(ours) == 4 and ours[0] is ours[1] and ours[2] is ours[3]  # each block feeds 2 joint blocks
    tokens = torch.nn.functional.conv2d(a["x"], a["embedder"]["x.weight"], a["embedder"]["x.bias"], stride=2)
    tokens = tokens.flatten(2).transpose(1, 2) + sincos_positions(192, 4, 6, "cpu")
    with torch.no_grad():
        expected = reference(hidden_states=tokens, controlnet_cond=a["hint"], pooled_projections=a["y"],
                             timestep=a["timesteps"], conditioning_scale=1.0).controlnet_block_samples
    for i, block in enumerate(expected):
        torch.testing.assert_close(ours[2 * i], block, rtol=1e-4, atol=1e-4)


def test_sincos_positions_span_the_grid_around_its_centre():
    table = sincos_positions(8, 2, 4, "cpu")
    assert table.shape == (8, 8)
    # the first quarter is sin(column position): columns of the 2x4 grid go 7.5 -+ 15
    torch.testing.assert_close(table[:4, 0], torch.sin(torch.linspace(-7.5, 22.5, 4)))


@pytest.mark.parametrize("zero_out", [False, True])
def test_residuals_change_the_mmdit_output_unless_zero_initialised(tmp_path, zero_out):
    path = write_sd35_controlnet(tmp_path / "cn.safetensors", seed=3, zero_out=zero_out)
    control = load_controlnet(str(path))
    with torch.device("meta"):
        mmdit = MMDiT(mmdit_params("sd3.5_large"))
    mmdit.load_state_dict(mmdit_state_dict(mmdit_params("sd3.5_large"), seed=5), assign=True)
    a = _inputs(1)
    a["embedder"] = {"x.weight": mmdit.x_embedder.proj.weight, "x.bias": mmdit.x_embedder.proj.bias}
    residuals = control.control_model(**a)
    context = torch.randn(1, 5, 4096)
    with torch.no_grad():
        plain = mmdit(a["x"], a["timesteps"], context, a["y"])
        controlled = mmdit(a["x"], a["timesteps"], context, a["y"], control=residuals)
    assert torch.equal(plain, controlled) == zero_out


@pytest.mark.slow
def test_sd35_large_depth_template_runs_through_the_server(graph_server):
    from PIL import Image

    models = graph_server.models_dir
    _place_checkpoint(models("checkpoints") / "sd3.5_large_fp8_scaled.safetensors")
    write_sd35_controlnet(models("controlnet") / "sd3.5_large_controlnet_depth.safetensors", seed=1,
                          dtype=torch.float16)
    place_lotus_depth_files(models)
    graph_server.input_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(graph_server.input_dir / "sd3.5_large_depth_input_image.png")
    converted = graph_server.server.post("/api/workflows/convert", json={"workflow": template("sd3.5_large_depth")})
    converted = converted.json()
    assert converted["missing_nodes"] == []
    prompt = _shrink(converted["prompt"])
    for node in prompt.values():
        if node["class_type"] == "ImageScaleToTotalPixels":
            node["inputs"]["megapixels"] = 0.01
    assert {"ControlNetLoader", "ControlNetApplyAdvanced", "LotusConditioning"} <= {
        n["class_type"] for n in prompt.values()}
    outputs = graph_server.outputs(prompt)
    saved = {key: out for key, out in outputs.items() if prompt[key]["class_type"] == "SaveImage"}
    images = _saved_images(graph_server, saved)
    assert len(images) == 1 and images[0].shape == (96, 96, 3) and images[0].std() > 0  # 0.01 MP, to 8 px


def test_apply_sd3_attaches_the_controlnet_with_its_vae(control_file):
    from comfy_kernel_core_nodes.families.sd3.nodes import ControlNetApplySD3

    control = load_controlnet(str(control_file))
    vae = object()
    positive, negative = [[torch.zeros(1, 2, 8), {}]], [[torch.zeros(1, 2, 8), {}]]
    pos, neg = ControlNetApplySD3().apply_controlnet(positive, negative, control, torch.zeros(1, 16, 16, 3), 0.5,
                                                     0.1, 0.9, vae=vae)
    applied = pos[0][1]["control"]
    assert isinstance(applied, ControlNetSD35) and applied is neg[0][1]["control"] and applied is not control
    assert applied.vae is vae and applied.strength == 0.5 and applied.timestep_percent_range == (0.1, 0.9)


def test_double_pooled_embedder_file_borrows_the_mmdit_pooled_embedder(tmp_path):
    """Files whose pooled embedder is hidden x hidden carry their own latent embedder and take the MMDiT's
    pooled one (ComfyUI's ``double_y_emb``); every block then reads the same tokens."""
    from safetensors.torch import save_file

    params = SD35ControlParams(blocks=2, main_depth=3, double_y_emb=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in SD35ControlNet(params).state_dict().items()}
    g = torch.Generator().manual_seed(2)
    sd = {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}
    assert sd["y_embedder.mlp.0.weight"].shape == (192, 192) and "x_embedder.proj.weight" in sd
    save_file(sd, str(tmp_path / "double.safetensors"))
    control = load_controlnet(str(tmp_path / "double.safetensors"))
    assert control.control_model.params == params
    with torch.device("meta"):
        mmdit = MMDiT(mmdit_params("sd3.5_large"))
    mmdit.load_state_dict(mmdit_state_dict(mmdit_params("sd3.5_large"), seed=5), assign=True)
    borrowed = borrowed_embedders(mmdit, double_y_emb=True)
    assert set(borrowed) == {"y.0.weight", "y.0.bias", "y.2.weight", "y.2.bias"}
    a = _inputs(2)
    a["embedder"] = borrowed
    with torch.no_grad():
        out = control.control_model(**a)["output"]
        assert len(out) == 4 and out[0].shape == (1, 24, 192)
        # the second block alone on the embedded tokens gives its residual: no chaining
        net = control.control_model
        tokens = net.x_embedder(a["x"]) + net.pos_embed_input(a["hint"])
        y = F.linear(F.silu(F.linear(a["y"], borrowed["y.0.weight"], borrowed["y.0.bias"])), borrowed["y.2.weight"],
                     borrowed["y.2.bias"])
        c = net.t_embedder(timestep_embedding(a["timesteps"])) + net.y_embedder(y)
        block = net.transformer_blocks[1]
        qkv, _, rest = block.pre_attention(tokens, c)
        expected = net.controlnet_blocks[1](block.post_attention(optimized_attention(*qkv, 3), None, *rest))
    torch.testing.assert_close(out[2], expected)


# -- diffusers' SD3ControlNetModel files ---------------------------------------------------------


def _diffusers_sd3_controlnet(path: Path, zero_out: bool = False, hint_channels: int = 16):
    from diffusers.models.controlnets.controlnet_sd3 import SD3ControlNetModel
    from safetensors.torch import save_file

    torch.manual_seed(6)
    net = SD3ControlNetModel(num_layers=3, attention_head_dim=64, num_attention_heads=3, joint_attention_dim=4096,
                             caption_projection_dim=192, pooled_projection_dim=2048, pos_embed_max_size=16,
                             sample_size=16, extra_conditioning_channels=hint_channels - 16).eval()
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            tensor.copy_(torch.zeros_like(tensor) if zero_out and name.startswith("controlnet_blocks.")
                         else torch.randn_like(tensor) * 0.05)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net


def test_diffusers_sd3_controlnet_matches_diffusers(tmp_path):
    reference = _diffusers_sd3_controlnet(tmp_path / "sd3cn.safetensors")
    control = load_controlnet(str(tmp_path / "sd3cn.safetensors"))
    assert control.compression_ratio == 1 and control.latent_format.shift_factor == 0 and not control.concat_mask
    a = _inputs(3)
    context = torch.randn(1, 5, 4096)
    with torch.no_grad():
        ours = control.control_model(x=a["x"], timesteps=a["timesteps"], hint=a["hint"], context=context,
                                     y=a["y"])["output"]
        expected = reference(hidden_states=a["x"], controlnet_cond=a["hint"], encoder_hidden_states=context,
                             pooled_projections=torch.zeros_like(a["y"]), timestep=a["timesteps"]
                             ).controlnet_block_samples
    # width 192: an MMDiT of depth 3; 3 blocks give depth // 3 = 1 residual each, the last block none
    assert len(ours) == 2
    for i in range(2):
        torch.testing.assert_close(ours[i], expected[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("zero_out", [False, True])
def test_diffusers_sd3_controlnet_changes_the_mmdit_unless_zero(tmp_path, zero_out):
    _diffusers_sd3_controlnet(tmp_path / "sd3cn.safetensors", zero_out=zero_out)
    control = load_controlnet(str(tmp_path / "sd3cn.safetensors"))
    with torch.device("meta"):
        mmdit = MMDiT(mmdit_params("sd3_medium"))
    mmdit.load_state_dict(mmdit_state_dict(mmdit_params("sd3_medium"), seed=5), assign=True)
    a = _inputs(4)
    context = torch.randn(1, 5, 4096)
    with torch.no_grad():
        residuals = control.control_model(x=a["x"], timesteps=a["timesteps"], hint=a["hint"], context=context)
        plain = mmdit(a["x"], a["timesteps"], context, a["y"])
        controlled = mmdit(a["x"], a["timesteps"], context, a["y"], control=residuals)
    assert torch.equal(plain, controlled) == zero_out


def test_diffusers_sd3_inpainting_controlnet_concatenates_the_mask(tmp_path):
    _diffusers_sd3_controlnet(tmp_path / "inpaint.safetensors", hint_channels=17)
    assert load_controlnet(str(tmp_path / "inpaint.safetensors")).concat_mask


@pytest.mark.slow
def test_diffusers_sd3_controlnet_through_apply_sd3_changes_the_image(graph_server):
    from PIL import Image

    models = graph_server.models_dir
    _place_checkpoint(models("checkpoints") / "sd3.5_large_fp8_scaled.safetensors")
    _diffusers_sd3_controlnet(models("controlnet") / "sd3_controlnet_canny.safetensors")
    graph_server.input_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(graph_server.input_dir / "hint.png")

    def prompt(strength: float) -> dict:
        return {
            "ckpt": {"class_type": "CheckpointLoaderSimple",
                     "inputs": {"ckpt_name": "sd3.5_large_fp8_scaled.safetensors"}},
            "cn": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3_controlnet_canny.safetensors"}},
            "image": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red fox"}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
            "apply": {"class_type": "ControlNetApplySD3", "inputs": {
                "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "vae": ["ckpt", 2],
                "image": ["image", 0], "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
            "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["ckpt", 0], "positive": ["apply", 0], "negative": ["apply", 1],
                "latent_image": ["latent", 0], "seed": 3, "steps": 2, "cfg": 3.0, "sampler_name": "euler",
                "scheduler": "sgm_uniform", "denoise": 1.0}},
            "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
            "probe": {"class_type": "TestProbe", "inputs": {"value": ["decode", 0], "name": "image"}},
        }

    with_control = graph_server.run(prompt(1.0))["image"]
    without = graph_server.run(prompt(0.0))["image"]
    assert with_control.shape == without.shape == (1, 64, 64, 3) and np.isfinite(with_control).all()
    assert np.abs(with_control - without).max() > 1e-3
