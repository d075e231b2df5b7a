"""Save Conditioning and Load Conditioning through the server: the file layout and a lossless round trip.

The conditioning is a tiny umt5 text encoding (see _files_wan.py) carrying a
tensor option (a mask), a list of tensors (two reference latents) and plain
options (numbers, a bool), the kinds of value the file format distinguishes.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from _files_wan import place, umt5_file
from safetensors import safe_open

pytestmark = pytest.mark.timeout(300)


def read(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def server(graph_server):
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5.safetensors")
    return graph_server


def conditioning_graph() -> dict:
    return {
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "text": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a lighthouse at dusk"}},
        "mask": {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": 16, "height": 8}},
        "masked": {"class_type": "ConditioningSetMask", "inputs": {
            "conditioning": ["text", 0], "mask": ["mask", 0], "strength": 0.8, "set_cond_area": "mask bounds"}},
        "l1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "l2": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 64, "batch_size": 1}},
        "ref1": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["masked", 0], "latent": ["l1", 0]}},
        "ref2": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["ref1", 0], "latent": ["l2", 0]}},
        "timed": {"class_type": "ConditioningSetTimestepRange",
                  "inputs": {"conditioning": ["ref2", 0], "start": 0.1, "end": 0.9}},
    }


def test_save_then_load_conditioning(server):
    prompt = conditioning_graph()
    prompt["save"] = {"class_type": "SaveConditioning",
                      "inputs": {"conditioning": ["timed", 0], "filename_prefix": "conditioning/fox"}}
    prompt["saved"] = {"class_type": "TestProbe", "inputs": {"value": ["save", 0], "name": "saved"}}
    original = server.run(prompt)["saved"]

    path = server.output_dir / "conditioning" / "fox_00001_.safetensors"
    tensors, metadata = read(path)
    assert sorted(tensors) == ["conditioning", "mask", "reference_latents.0", "reference_latents.1"]
    assert tensors["reference_latents.1"].shape[-1] == 4  # 32 pixels wide, the second reference
    assert json.loads(metadata["conditioning_options"]) == {
        "set_area_to_bounds": True, "mask_strength": 0.8, "start_percent": 0.1, "end_percent": 0.9}

    shutil.copyfile(path, server.models_dir("embeddings") / "fox.safetensors")
    loaded = server.run({
        "load": {"class_type": "ConditioningLoader", "inputs": {"conditioning_name": "fox.safetensors"}},
        "again": {"class_type": "SaveConditioning",
                  "inputs": {"conditioning": ["load", 0], "filename_prefix": "conditioning/again"}},
        "probe": {"class_type": "TestProbe", "inputs": {"value": ["again", 0], "name": "loaded"}},
    })["loaded"]
    # shapes, option names, tensor means and plain values; options set to None (umt5 has no pooled output)
    # are not written
    assert original[0]["options"].pop("pooled_output") is None
    assert loaded == original
    again, again_metadata = read(server.output_dir / "conditioning" / "again_00001_.safetensors")
    assert sorted(again) == sorted(tensors)
    for key, value in tensors.items():
        assert torch.equal(again[key], value), key
    assert json.loads(again_metadata["conditioning_options"]) == json.loads(metadata["conditioning_options"])


def test_save_conditioning_refuses_combined_entries(server):
    prompt = conditioning_graph()
    prompt["both"] = {"class_type": "ConditioningCombine",
                      "inputs": {"conditioning_1": ["text", 0], "conditioning_2": ["timed", 0]}}
    prompt["save"] = {"class_type": "SaveConditioning",
                      "inputs": {"conditioning": ["both", 0], "filename_prefix": "conditioning/two"}}
    error = server.error(prompt)
    assert "single conditioning entry" in error["exception_message"]
