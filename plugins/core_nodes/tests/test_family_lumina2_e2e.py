"""Lumina-Image 2.0 through the server: NextDiT at 2304 wide, Gemma 2 2B under CLIPLoader type ``lumina2``.

Random-weight files (_files_lumina2.py) sit in the model folders under the
names ComfyUI's Lumina 2 workflows use; the graph samples 2 steps at 64x64,
decodes with Flux's 16-channel autoencoder and saves the image.
"""

from __future__ import annotations

import pytest
import torch
from _files_lumina2 import gemma_file, lumina2_file
from _files_qwen import place
from _flux import vae16_state_dict
from _random_weights import write
from PIL import Image

pytestmark = pytest.mark.slow

UNET = "lumina_2_model_bf16.safetensors"
TE = "gemma_2_2b_fp16.safetensors"


@pytest.fixture(scope="module")
def server(graph_server):
    place(lumina2_file(), graph_server.models_dir("diffusion_models"), UNET)
    place(gemma_file(), graph_server.models_dir("text_encoders"), TE)
    write(graph_server.models_dir("vae") / "ae.safetensors", vae16_state_dict(dtype=torch.float16))
    yield graph_server


@pytest.mark.timeout(900)
def test_lumina2_gemma_text_to_image(server):
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": TE, "type": "lumina2", "device": "default"}},
        "3": {"class_type": "CLIPTextEncodeLumina2", "inputs": {"system_prompt": "superior",
                                                               "user_prompt": "a red chair", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], "seed": 3,
            "steps": 2, "cfg": 4.0, "sampler_name": "res_multistep", "scheduler": "simple", "denoise": 1.0}},
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["7", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "lumina2"}},
    }
    entry = server.wait(server.queue(prompt), timeout=900)
    image = entry["outputs"]["9"]["images"][0]
    saved = Image.open(server.output_dir / image.get("subfolder", "") / image["filename"])
    assert saved.size == (64, 64)
