"""DiffusersLoader and CheckpointLoader through the server (real HTTP, one server for the module).

DiffusersLoader's folder is diffusers' conversion of the tiny SD1.5 checkpoint
(_files_diffusers.py): text to image through it saves the same PNG as through
CheckpointLoaderSimple on the checkpoint. CheckpointLoader reads the YAML model
config: ``parameterization: "v"`` samples as CheckpointLoaderSimple followed by
ModelSamplingDiscrete v_prediction, ``layer_idx`` encodes as CLIPSetLastLayer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _files_diffusers import sd15_folder  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CKPT = "sd15-tiny.safetensors"

LDM_CONFIG = """\
model:
  base_learning_rate: 1.0e-04
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
{parameterization}    linear_start: 0.00085
    linear_end: 0.0120
    timesteps: 1000
    scale_factor: 0.18215
    unet_config:
      target: ldm.modules.diffusionmodules.openaimodel.UNetModel
      params:
        in_channels: 4
        out_channels: 4
        model_channels: 320
        attention_resolutions: [ 4, 2, 1 ]
        context_dim: 768
    first_stage_config:
      target: ldm.models.autoencoder.AutoencoderKL
      params:
        embed_dim: 4
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
{cond_params}"""


@pytest.fixture(scope="module")
def server(graph_server, sd15_tiny_checkpoint):
    (graph_server.models_dir("checkpoints") / CKPT).symlink_to(sd15_tiny_checkpoint)
    nested = graph_server.models_dir("diffusers") / "sd"
    nested.mkdir()
    (nested / "sd15-tiny").symlink_to(sd15_folder(sd15_tiny_checkpoint), target_is_directory=True)
    configs = graph_server.models_dir("configs")
    (configs / "v-config.yaml").write_text(LDM_CONFIG.format(parameterization='    parameterization: "v"\n',
                                                             cond_params=""))
    (configs / "eps-clip-skip-2.yaml").write_text(LDM_CONFIG.format(
        parameterization="", cond_params="      params:\n        layer: hidden\n        layer_idx: -2\n"))
    return graph_server


def _txt2img(loader: dict, model: list | None = None, clip: list | None = None, save: bool = False) -> dict:
    model = model or ["load", 0]
    clip = clip or ["load", 1]
    prompt = {
        "load": loader,
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "a red fox in the snow"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "blurry"}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 7, "steps": 3, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["load", 2]}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["sample", 0], "name": "latent"}},
    }
    if save:
        prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "loader"}}
    return prompt


def _saved(server, outputs: dict) -> np.ndarray:
    from PIL import Image

    items = [item for out in outputs.values() for item in out.get("images", [])]
    assert len(items) == 1
    return np.asarray(Image.open(server.output_dir / items[0]["subfolder"] / items[0]["filename"]))


def test_object_info_lists_pipeline_folders_and_configs(server):
    info = server.server.get("/object_info").json()
    assert info["DiffusersLoader"]["input"]["required"]["model_path"][0] == ["sd/sd15-tiny"]
    assert info["CheckpointLoader"]["input"]["required"]["config_name"][0] == ["eps-clip-skip-2.yaml",
                                                                               "v-config.yaml"]
    assert info["CheckpointLoader"]["deprecated"] is True
    later = server.models_dir("diffusers") / "sd" / "later"  # a folder added while the server runs shows up
    later.mkdir()
    (later / "model_index.json").write_text("{}")
    info = server.server.get("/object_info").json()
    assert info["DiffusersLoader"]["input"]["required"]["model_path"][0] == ["sd/later", "sd/sd15-tiny"]
    (later / "model_index.json").unlink()
    later.rmdir()


def test_diffusers_folder_makes_the_checkpoints_image(server):
    folder = {"class_type": "DiffusersLoader", "inputs": {"model_path": "sd/sd15-tiny"}}
    single = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}
    got, got_outputs = server.run_with_outputs(_txt2img(folder, save=True))
    ref, ref_outputs = server.run_with_outputs(_txt2img(single, save=True))
    assert np.array_equal(got["latent"]["samples"], ref["latent"]["samples"])
    image, ref_image = _saved(server, got_outputs), _saved(server, ref_outputs)
    assert image.shape == (64, 64, 3) and image.std() > 0 and np.array_equal(image, ref_image)


def test_v_parameterization_config_gives_the_v_prediction_model(server):
    with_config = {"class_type": "CheckpointLoader", "inputs": {"config_name": "v-config.yaml", "ckpt_name": CKPT}}
    simple = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}
    got = server.run(_txt2img(with_config))
    v_prompt = _txt2img(simple, model=["v", 0])
    v_prompt["v"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["load", 0], "sampling": "v_prediction",
                                                                     "zsnr": False}}
    ref = server.run(v_prompt)
    eps = server.run(_txt2img(simple))
    assert np.array_equal(got["latent"]["samples"], ref["latent"]["samples"])
    assert not np.allclose(got["latent"]["samples"], eps["latent"]["samples"])  # the config made the difference


def test_layer_idx_in_config_encodes_as_clip_set_last_layer(server):
    with_config = {"class_type": "CheckpointLoader", "inputs": {"config_name": "eps-clip-skip-2.yaml",
                                                                "ckpt_name": CKPT}}
    simple = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}}
    got = server.run(_txt2img(with_config))
    skip_prompt = _txt2img(simple, clip=["skip", 0])
    skip_prompt["skip"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["load", 1], "stop_at_clip_layer": -2}}
    ref = server.run(skip_prompt)
    plain = server.run(_txt2img(simple))
    assert np.array_equal(got["latent"]["samples"], ref["latent"]["samples"])
    assert not np.allclose(got["latent"]["samples"], plain["latent"]["samples"])
