"""SD3 / SD3.5 end to end through the server: the frontend's sd3.5_simple_example template and the
split-file graph (UNETLoader, TripleCLIPLoader, CLIPTextEncodeSD3, ModelSamplingSD3, SkipLayerGuidanceSD3).

Random-weight files (see _sd3.py) are placed under the names the templates
expect; everything runs 2 steps at 64x64.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _flux import clip_l_state_dict, t5_state_dict, vae16_state_dict  # noqa: E402
from _random_weights import fp8_state_dict, write  # noqa: E402
from _sd3 import checkpoint_file, clip_g_file, mmdit_params, mmdit_state_dict  # noqa: E402
from _templates import template  # noqa: E402
from test_family_flux_server import _saved_images, _shrink  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_torch_thread")]


@pytest.fixture(scope="module")
def files(graph_server):
    models = lambda folder: graph_server.models_dir(folder)  # noqa: E731
    os.link(checkpoint_file(), models("checkpoints") / "sd3.5_large_fp8_scaled.safetensors")  # the cached files, hard-linked
    os.link(clip_g_file(), models("text_encoders") / "clip_g.safetensors")
    write(models("text_encoders") / "clip_l.safetensors", clip_l_state_dict())
    write(models("text_encoders") / "t5xxl_fp8_e4m3fn_scaled.safetensors",
          fp8_state_dict(t5_state_dict(), scaled=True))
    write(models("vae") / "sd3_vae.safetensors", vae16_state_dict(dtype=torch.float16))
    write(models("diffusion_models") / "sd3.5_medium.safetensors",
          mmdit_state_dict(mmdit_params("sd3.5_medium"), seed=3, dtype=torch.float16))
    return graph_server


def test_sd35_simple_template_runs_from_a_scaled_fp8_checkpoint(files):
    converted = files.server.post("/api/workflows/convert",
                                  json={"workflow": template("sd3.5_simple_example")}).json()
    assert converted["missing_nodes"] == []
    images = _saved_images(files, files.outputs(_shrink(converted["prompt"])))
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0


def test_split_files_graph_with_triple_clip_and_skip_layer_guidance(files):
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3.5_medium.safetensors",
                                                        "weight_dtype": "fp8_e4m3fn"}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["unet", 0], "shift": 2.5}},
        "slg": {"class_type": "SkipLayerGuidanceSD3", "inputs": {"model": ["shift", 0], "layers": "1", "scale": 3.0,
                                                                 "start_percent": 0.0, "end_percent": 1.0}},
        "clip": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp8_e4m3fn_scaled.safetensors",
                                                              "clip_name2": "clip_g.safetensors",
                                                              "clip_name3": "clip_l.safetensors"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "sd3_vae.safetensors"}},
        "pos": {"class_type": "CLIPTextEncodeSD3", "inputs": {
            "clip": ["clip", 0], "clip_l": "a red fox", "clip_g": "a red fox", "t5xxl": "a red fox in the snow",
            "empty_padding": "none"}},
        "neg": {"class_type": "CLIPTextEncodeSD3", "inputs": {
            "clip": ["clip", 0], "clip_l": "", "clip_g": "", "t5xxl": "", "empty_padding": "none"}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["slg", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": 1, "steps": 2, "cfg": 4.5, "sampler_name": "euler", "scheduler": "sgm_uniform", "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["vae", 0]}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["decode", 0], "name": "image"}},
        "pos_probe": {"class_type": "TestProbe", "inputs": {"value": ["pos", 0], "name": "pos"}},
        "neg_probe": {"class_type": "TestProbe", "inputs": {"value": ["neg", 0], "name": "neg"}},
    }
    out = files.run(prompt)
    assert out["image"].shape == (1, 64, 64, 3) and np.isfinite(out["image"]).all() and out["image"].std() > 0
    pos, neg = out["pos"][0], out["neg"][0]
    assert pos["shape"] == [1, 77 + 77, 4096]  # CLIP-L|G (padded to 4096) then T5
    assert pos["options"]["pooled_output"]["tensor_shape"] == [1, 2048]
    assert neg["shape"] == [1, 1, 4096]  # empty_padding none: T5's end token alone
    assert neg["options"]["pooled_output"]["mean"] == 0.0  # no CLIP prompt: a zero pooled vector
