"""A pack driving a real (tiny, random-weight) SD1.5 checkpoint through ComfyUI's internal modules.

``tests/packs/model_pack`` imports what the popular packs import (comfy.samplers,
comfy.sample, comfy.model_patcher, comfy_extras.nodes_mask ...) and calls it the
way they do; these tests run its nodes in a real server beside the core nodes.
"""

from __future__ import annotations

import pytest
from _checkpoint import CHECKPOINT, tiny_checkpoint
from compat_helpers import Client, events, start

pytest.importorskip("comfy_kernel_core_nodes")
pytest.importorskip("torch")

pytestmark = pytest.mark.slow
CHECKPOINT_NAME = CHECKPOINT.name


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("model_pack")
    checkpoint = tiny_checkpoint()
    paths = base / "extra_model_paths.yaml"  # the cached file stays where it is (no copy of 573 MB)
    paths.write_text(f"cache:\n  base_path: {checkpoint.parent}\n  checkpoints: .\n")
    srv = start(base, "model_pack", "missing_pack", keep={"compat", "core_nodes"},
                args=("--cpu", "--extra-model-paths-config", str(paths)))
    yield srv
    srv.stop()
    srv.client.close()


def _graph() -> dict:
    text = {"clip": ["1", 1]}
    ksampler = {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}
    return {
        "1": {"class_type": "MPLoadCheckpoint", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", **text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", **text}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "MPPatchModel", "inputs": {"model": ["1", 0]}},
        "6": {"class_type": "MPSample", "inputs": {"model": ["5", 0], "seed": 3, "steps": 2, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0]}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "8": {"class_type": "MPStats", "inputs": {"latent": ["6", 0]}},
        "9": {"class_type": "MPStats", "inputs": {"latent": ["7", 0]}},
        "10": {"class_type": "MPGuiderSample", "inputs": {"model": ["5", 0], "positive": ["2", 0],
                                                          "negative": ["3", 0], "latent_image": ["4", 0],
                                                          "seed": 3}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["10", 0], "vae": ["1", 2]}},
        "12": {"class_type": "MPImageTools", "inputs": {"image": ["11", 0]}},
        "13": {"class_type": "MPStats", "inputs": {"latent": ["10", 0], "image": ["12", 0], "mask": ["12", 1]}},
        "14": {"class_type": "MPWrapModule", "inputs": {"strength": 0.5}},
        "15": {"class_type": "MPStats", "inputs": {"a": ["14", 0], "b": ["14", 1]}},
        "16": {"class_type": "MPSeamless", "inputs": {"model": ["1", 0]}},
        "17": {"class_type": "KSampler", "inputs": {**ksampler, "model": ["16", 1]}},
        "18": {"class_type": "MPStats", "inputs": {"latent": ["17", 0]}},
        "19": {"class_type": "KSampler", "inputs": {**ksampler, "model": ["16", 0], "seed": 4}},
        "20": {"class_type": "KSampler", "inputs": {**ksampler, "seed": 4}},
        "21": {"class_type": "MPStats", "inputs": {"latent": ["19", 0]}},
        "22": {"class_type": "MPStats", "inputs": {"latent": ["20", 0]}},
    }


def test_pack_loads_with_all_nodes(server):
    record = next(p for p in server.get("/api/plugins").json() if p["name"] == "model_pack")
    assert record["status"] == "loaded", record.get("traceback")
    info = server.get("/object_info").json()
    assert {"MPLoadCheckpoint", "MPSample", "MPGuiderSample", "MPWrapModule"} <= set(info)
    samplers = info["MPSample"]["input"]["required"]["sampler_name"][0]
    assert samplers == info["KSampler"]["input"]["required"]["sampler_name"][0]


def test_a_pack_needing_a_missing_module_fails_alone(server):
    records = {p["name"]: p for p in server.get("/api/plugins").json()}
    failed = records["missing_pack"]
    assert failed["status"] == "failed"
    assert "comfy.ldm.not_a_family" in failed["error"]
    assert records["model_pack"]["status"] == "loaded"
    log = open(server.log_path, encoding="utf-8").read()
    assert "missing_pack" in log and "comfy.ldm.not_a_family" in log


def test_workflow_through_comfy_internals(server):
    with Client(server) as client:
        _, messages = client.run(_graph())
    errors = events(messages, "execution_error")
    assert not errors, [(e["exception_message"], e["traceback"][-3:]) for e in errors]
    out = {e["node"]: e["output"] for e in events(messages, "executed")}

    # comfy.sample.sample on a patched clone (pass-through patches) gives KSampler's exact latent.
    ours, core = out["8"]["latent"][0], out["9"]["latent"][0]
    assert ours["shape"] == [1, 4, 8, 8]
    assert ours["head"] == core["head"] and ours["sum"] == core["sum"]

    # latent_preview.prepare_callback reported the pack sampler's steps like KSampler's.
    steps = [d for d in events(messages, "progress") if d.get("node") == "6"]
    assert [d["value"] for d in steps][-1] == 2 and steps[-1]["max"] == 2

    # The patches and wrappers the pack set were called by the core sampler and UNet.
    seen = server.get("/model_pack/seen").json()
    assert seen["frozen"] == [True, True]  # routes are fixed once the server runs, as aiohttp's are
    assert seen["attn1"] > 0 and seen["apply_model"] > 0 and seen["post_cfg"] > 0
    assert seen["sampling_function"] == 2 * 1  # two steps of euler, one model call each
    # The injection ran on the network in use (its hook saw the patched clone's calls) and was ejected after
    # each use, so the plain KSampler run on the same cached network was not counted.
    assert seen["injected_calls"] == 4 and seen["ejected"] == 2  # 2 sampling runs x 2 steps (cond+uncond batched)

    stats = out["13"]
    assert stats["latent"][0]["shape"] == [1, 4, 8, 8]
    assert stats["image"][0]["shape"] == [1, 128, 128, 3]  # composite onto the 2x common_upscale canvas
    assert stats["mask"][0]["shape"] == [1, 64, 64] and stats["mask"][0]["sum"] == 16.0  # 2x2 grown by 1

    # A deep copy runs its own network: its circular padding changes its result, and only its result.
    assert out["18"]["latent"][0]["sum"] != core["sum"]
    assert out["21"]["latent"][0]["head"] == out["22"]["latent"][0]["head"]

    # A ModelPatcher around the pack's own module: patched in place, then restored.
    assert out["15"]["floats"] == [1.5, 1.0]
