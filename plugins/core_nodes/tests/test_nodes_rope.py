"""ScaleROPE through the server on a tiny random-weight Wan 2.1 model (two latent frames, 32x32 pixels).

Rotary embeddings make attention depend on position differences only, so
shifting every axis leaves the result unchanged (to float rounding) while
scaling an axis changes it; a scale along an axis of length one moves nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from _files_wan import place, transformer_file, umt5_file
from _templates import template

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.timeout(600)]

NEUTRAL = {"scale_x": 1.0, "shift_x": 0.0, "scale_y": 1.0, "shift_y": 0.0, "scale_t": 1.0, "shift_t": 0.0}


@pytest.fixture(scope="module")
def server(graph_server):
    place(transformer_file("t2v", seed=1), graph_server.models_dir("diffusion_models"), "wan.safetensors")
    place(umt5_file(), graph_server.models_dir("text_encoders"), "umt5.safetensors")
    return graph_server


def run(server, variants: dict[str, dict[str, float]], length: int) -> dict[str, np.ndarray]:
    prompt = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan.safetensors", "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "waves on a beach"}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo",
                   "inputs": {"width": 32, "height": 32, "length": length, "batch_size": 1}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sigmas": {"class_type": "ManualSigmas", "inputs": {"sigmas": "1.0, 0.6, 0.3, 0.0"}},
    }
    for name, options in variants.items():
        model = ["unet", 0]
        if options is not None:
            prompt[f"{name}_rope"] = {"class_type": "ScaleROPE", "inputs": {"model": ["unet", 0], **options}}
            model = [f"{name}_rope", 0]
        prompt[f"{name}_guider"] = {"class_type": "BasicGuider", "inputs": {"model": model, "conditioning": ["pos", 0]}}
        prompt[f"{name}_sample"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": [f"{name}_guider", 0], "sampler": ["euler", 0], "sigmas": ["sigmas", 0],
            "latent_image": ["latent", 0]}}
        prompt[f"{name}_probe"] = {"class_type": "TestProbe", "inputs": {"value": [f"{name}_sample", 0], "name": name}}
    return {name: value["samples"] for name, value in server.run(prompt).items()}


def test_scale_rope_on_wan(server):
    out = run(server, {
        "plain": None,
        "neutral": NEUTRAL,
        "shifted": {**NEUTRAL, "shift_x": 5.0, "shift_y": -3.0, "shift_t": 2.0},
        "wide": {**NEUTRAL, "scale_x": 2.0},
        "slow": {**NEUTRAL, "scale_t": 7.0},
    }, length=5)
    assert out["plain"].shape[2] == 2  # two latent frames
    np.testing.assert_array_equal(out["neutral"], out["plain"])
    np.testing.assert_allclose(out["shifted"], out["plain"], rtol=1e-3, atol=1e-3)
    for name in ("wide", "slow"):
        assert np.abs(out[name] - out["plain"]).max() > 1e-2, name


def test_time_scale_moves_nothing_in_a_single_frame(server):
    out = run(server, {"plain": None, "slow": {**NEUTRAL, "scale_t": 7.0}}, length=1)
    np.testing.assert_array_equal(out["slow"], out["plain"])


def test_chrono_edit_template_converts_with_every_node_here(server):
    r = server.server.post("/api/workflows/convert", json={"workflow": template("image_chrono_edit_14B")})
    assert r.status_code == 200, r.text
    assert r.json()["missing_nodes"] == []
    (rope,) = [n["inputs"] for n in r.json()["prompt"].values() if n["class_type"] == "ScaleROPE"]
    assert {k: v for k, v in rope.items() if k != "model"} == {**NEUTRAL, "scale_t": 7}
