"""Parity with ComfyUI: every reference workflow through the real server, images compared with ComfyUI's.

One server process runs all 13 workflows of tests/data/reference/workflows on
the tiny checkpoint; each PNG, fetched through /view, must match ComfyUI's
within the reference README §4 tolerances: no pixel value off by more than 1
and at most 0.5 % of values different at all.

``CK_PARITY_SERVE_FLAGS`` adds ``serve`` flags to that server, to check an
option against the same references (``CK_PARITY_SERVE_FLAGS="--compile
max-autotune"``: the compiled networks' images).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_kernel.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).parent))  # shared helpers, whatever pytest's import mode
from _server import PromptClient, png_pixels, prepare_base  # noqa: E402

pytestmark = pytest.mark.slow

WORKFLOWS = [
    "txt2img", "txt2img_euler_ancestral_normal", "txt2img_dpmpp_2m_karras", "txt2img_dpmpp_2m_sde_karras",
    "txt2img_heun_normal", "txt2img_ddim_ddim_uniform", "txt2img_uni_pc_simple", "txt2img_lcm_sgm_uniform",
    "img2img", "prompt_weighting", "batch2", "clip_skip2", "hires_fix",
]
MAX_DIFF = 1
MAX_DIFFERING = 0.005
FLAGS = os.environ.get("CK_PARITY_SERVE_FLAGS", "").split()
RUN_TIMEOUT = 1800.0 if "--compile" in FLAGS else 120.0  # a compiling first run takes minutes


@pytest.fixture(scope="module")
def parity_client(tmp_path_factory, sd15_tiny_checkpoint, reference_outputs):
    reference = reference_outputs.parent
    base = prepare_base(tmp_path_factory.mktemp("parity"), sd15_tiny_checkpoint, reference)
    # One intra-op thread: on a shared 2-core CI machine a second spinning OpenMP thread makes these
    # small models several times slower, not faster.
    with ServerProcess(base, *FLAGS, env={"OMP_NUM_THREADS": "1"}, startup_timeout=120) as server:
        client = PromptClient(server)
        try:
            yield client
        finally:
            client.close()


def test_reference_workflow_list_is_complete(reference_outputs):
    """Every SD1.5 reference workflow is checked (the SDXL ones belong to the SDXL family's tests)."""
    names = sorted(p.stem for p in (reference_outputs.parent / "workflows").glob("*.json")
                   if not p.stem.startswith("sdxl_"))
    assert names == sorted(WORKFLOWS)


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_workflow_matches_comfyui(parity_client, reference_outputs, workflow):
    reference = reference_outputs.parent
    prompt = json.loads((reference / "workflows" / f"{workflow}.json").read_text())
    _, messages = parity_client.run(prompt, timeout=RUN_TIMEOUT)
    images = parity_client.images(messages)
    expected = sorted((reference_outputs / workflow).glob("*.png"))
    assert [item["filename"] for item, _ in images] == [p.name for p in expected]
    for (item, data), ref_path in zip(images, expected, strict=True):
        ours, theirs = png_pixels(data), png_pixels(ref_path.read_bytes())
        assert ours.shape == theirs.shape
        diff = np.abs(ours - theirs)
        differing = float((diff > 0).mean())
        print(f"{workflow}/{item['filename']}: max diff {diff.max()}, {differing:.4%} of values differ")
        assert diff.max() <= MAX_DIFF and differing <= MAX_DIFFERING, (
            f"{workflow}/{item['filename']}: max diff {diff.max()}, {differing:.4%} of values differ")
        # The file carries the posted prompt as its `prompt` text chunk, in Python's default JSON format.
        assert Image.open(io.BytesIO(data)).text["prompt"] == json.dumps(prompt)


def test_object_info_through_the_server(parity_client):
    """The running server lists the core nodes with ComfyUI's module, category and the checkpoint combo."""
    info = parity_client.server.get("/object_info/CheckpointLoaderSimple").json()["CheckpointLoaderSimple"]
    assert info["python_module"] == "nodes" and info["category"] == "loaders"
    assert info["display_name"] == "Load Checkpoint" and info["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["input"]["required"]["ckpt_name"][0] == ["sd15-tiny-seed0.safetensors"]
    ks = parity_client.server.get("/object_info/KSampler").json()["KSampler"]
    assert ks["input_order"]["required"][:2] == ["model", "seed"] and "euler" in ks["input"]["required"]["sampler_name"][0]
    assert parity_client.server.get("/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][0] == [
        "ref_input_64.png"]


def test_other_core_nodes_through_the_server(parity_client):
    """A graph through most non-reference nodes runs in the server, and the small utility graphs too."""
    ckpt = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15-tiny-seed0.safetensors"}}
    prompt = {
        "1": ckpt,
        "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a (red:1.2) ball"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blurry"}},
        "5": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["3", 0], "width": 64, "height": 64,
                                                              "x": 0, "y": 0, "strength": 1.0}},
        "6": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["5", 0], "conditioning_2": ["4", 0]}},
        "7": {"class_type": "LoadImage", "inputs": {"image": "ref_input_64.png"}},
        "8": {"class_type": "ImagePadForOutpaint", "inputs": {"image": ["7", 0], "left": 8, "top": 0, "right": 8,
                                                              "bottom": 0, "feathering": 8}},
        "9": {"class_type": "ImageScale", "inputs": {"image": ["8", 0], "upscale_method": "bilinear", "width": 64,
                                                     "height": 64, "crop": "center"}},
        "10": {"class_type": "LoadImageMask", "inputs": {"image": "ref_input_64.png", "channel": "red"}},
        "11": {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["9", 0], "vae": ["1", 2],
                                                               "mask": ["10", 0], "grow_mask_by": 6}},
        "12": {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["11", 0], "amount": 2}},
        "13": {"class_type": "LatentFromBatch", "inputs": {"samples": ["12", 0], "batch_index": 1, "length": 1}},
        "14": {"class_type": "KSamplerAdvanced", "inputs": {
            "model": ["1", 0], "add_noise": "enable", "noise_seed": 3, "steps": 3, "cfg": 4.0,
            "sampler_name": "dpmpp_2m", "scheduler": "karras", "positive": ["6", 0], "negative": ["4", 0],
            "latent_image": ["13", 0], "start_at_step": 0, "end_at_step": 10000,
            "return_with_leftover_noise": "disable"}},
        "15": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["14", 0], "vae": ["1", 2], "tile_size": 512,
                                                          "overlap": 64, "temporal_size": 64, "temporal_overlap": 8}},
        "16": {"class_type": "ImageInvert", "inputs": {"image": ["15", 0]}},
        "17": {"class_type": "PreviewImage", "inputs": {"images": ["16", 0]}},
        "18": {"class_type": "PrimitiveInt", "inputs": {"value": 41}},
        "19": {"class_type": "PreviewAny", "inputs": {"source": ["18", 0]}},
    }
    _, messages = parity_client.run(prompt, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    images = parity_client.images(messages)
    assert len(images) == 1 and images[0][0]["type"] == "temp"
    png = Image.open(io.BytesIO(images[0][1]))
    assert png.size == (64, 64) and png.text["workflow"] == '{"nodes": []}'
    texts = [d["output"] for _, kind, d in messages if kind == "executed" and d.get("node") == "19"]
    assert texts == [{"text": ["41"]}]
    steps = [d["value"] for _, kind, d in messages if kind == "progress" and d.get("node") == "14"]
    assert steps == [1, 2, 3]
