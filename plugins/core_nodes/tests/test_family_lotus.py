"""Lotus-D: detection of a released-layout UNet file, the task embedding, the one-step img_to_img prediction
(against diffusers' UNet), LotusConditioning's stored values, and the frontend's depth template through the server.

The UNet file is written by diffusers itself (see _files_lotus.py): a reduced
Lotus-D UNet in the diffusers layout the released files use.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _files_lotus import lotus_unet, place_lotus_depth_files, write_lotus_unet  # noqa: E402
from _templates import template  # noqa: E402

from comfy_kernel_core_nodes.model import model_sampling as ms  # noqa: E402
from comfy_kernel_core_nodes.model.base import ModelType  # noqa: E402
from comfy_kernel_core_nodes.model.files import raw_tensor_shapes, tensor_shapes  # noqa: E402
from comfy_kernel_core_nodes.model.loading import load_diffusion_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: [1, 1, 4]: sin(1), sin(0), cos(1), cos(0)
TASK = torch.tensor([[math.sin(1.0), 0.0, math.cos(1.0), 1.0]])


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory) -> Path:
    return write_lotus_unet(tmp_path_factory.mktemp("lotus") / "lotus-depth-d-v1-1.safetensors", dtype=torch.float32)


def test_released_layout_file_is_lotus_with_every_tensor_placed(unet_file):
    patcher = load_diffusion_model(str(unet_file))
    model = patcher.model
    assert model.model_config.family == "lotus_d"
    assert model.model_type == ModelType.IMG_TO_IMG and isinstance(model.model_sampling, ms.IMG_TO_IMG)
    assert model.unet_config["adm_in_channels"] == 4 and model.unet_config["num_heads"] == 8
    renamed = tensor_shapes(str(unet_file))
    assert len(renamed) == len(raw_tensor_shapes(str(unet_file)))  # every diffusers name has an LDM name
    network = model.diffusion_model
    assert set(network.state_dict()) == set(renamed)  # nothing missing, nothing left over
    assert tuple(network.label_emb[0][0].weight.shape) == (1280, 4)


def test_same_unet_without_task_embedding_is_sd2(tmp_path):
    path = write_lotus_unet(tmp_path / "sd2-unet.safetensors", task_embedding=False)
    assert load_diffusion_model(str(path)).model.model_config.family == "sd2"


def test_task_embedding_is_sin_cos_of_the_task_vector(unet_file):
    model = load_diffusion_model(str(unet_file)).model
    ctx = torch.zeros(1, 2, 1024)
    conds = model.extra_conds(cross_attn=ctx, device="cpu", noise=torch.zeros(1, 4, 8, 8))
    assert torch.allclose(conds["y"].cond, TASK, atol=1e-7)
    assert conds["c_crossattn"].cond is ctx and "c_concat" not in conds


def test_prediction_matches_diffusers_unet_at_the_top_timestep(unet_file):
    model = load_diffusion_model(str(unet_file)).model
    gen = torch.Generator().manual_seed(5)
    x, ctx = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 2, 1024, generator=gen)
    sigma = model.model_sampling.sigma(torch.tensor([999.0]))
    with torch.no_grad():
        ours = model.apply_model(x, sigma, c_crossattn=ctx, y=TASK)
        theirs = lotus_unet()(x, 999, encoder_hidden_states=ctx, class_labels=TASK).sample
    assert theirs.std() > 0.05
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-3)


def test_one_step_at_sigma_999_returns_the_prediction_for_the_image_latent(unet_file):
    """The template's sampling (no noise, euler, sigmas [999, 0]) is one network evaluation on the latent."""
    from comfy_kernel_core_nodes.families.lotus.nodes import LotusConditioning
    from comfy_kernel_core_nodes.sampling.ksampler import sampler_object
    from comfy_kernel_core_nodes.sampling.sample import sample_custom

    patcher = load_diffusion_model(str(unet_file))
    cond = LotusConditioning.execute().result[0]
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    out = sample_custom(patcher, torch.zeros_like(latent), 1.0, sampler_object("euler"), torch.tensor([999.0, 0.0]),
                        cond, cond, latent)
    model = patcher.model
    with torch.no_grad():
        expected = model.process_latent_out(lotus_unet()(model.process_latent_in(latent), 999,
                                                         encoder_hidden_states=cond[0][0], class_labels=TASK).sample)
    torch.testing.assert_close(out, expected, atol=5e-4, rtol=1e-3)


def test_lotus_conditioning_is_comfyuis_stored_empty_prompt():
    from comfy_kernel_core_nodes.families.lotus.nodes import LotusConditioning

    (cond,) = LotusConditioning.execute().result
    assert len(cond) == 1 and cond[0][1] == {}
    t = cond[0][0]
    assert t.shape == (1, 2, 1024) and t.dtype == torch.float32
    # values read from ComfyUI 0.3.64's comfy_extras/nodes_lotus.py
    assert t[0, 0, 0].item() == -0.3134765625 and t[0, 0, 1].item() == -0.447509765625
    assert t[0, 0, 457].item() == 13.0234375 and t.abs().max().item() == 13.0234375
    assert t[0, 0, 1023].item() == -0.296142578125
    assert t[0, 1, 0].item() == 1.4111328125 and t[0, 1, 1023].item() == 1.5009765625
    t.zero_()  # the node hands out a copy each time
    assert LotusConditioning.execute().result[0][0][0].abs().max().item() == 13.0234375


@pytest.mark.slow
def test_lotus_depth_template_runs_through_the_server(graph_server):
    from PIL import Image

    place_lotus_depth_files(graph_server.models_dir)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    graph_server.input_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(graph_server.input_dir / "image_lotus_depth_v1_1_input_image.png")
    converted = graph_server.server.post("/api/workflows/convert",
                                         json={"workflow": template("image_lotus_depth_v1_1")}).json()
    assert converted["missing_nodes"] == []
    types = {node["class_type"] for node in converted["prompt"].values()}
    assert {"LotusConditioning", "UNETLoader", "SetFirstSigma", "SamplerCustomAdvanced"} <= types
    outputs = graph_server.outputs(converted["prompt"])
    images = [np.asarray(Image.open(graph_server.output_dir / item["subfolder"] / item["filename"]))
              for out in outputs.values() for item in out.get("images", [])]
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0
