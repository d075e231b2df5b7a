"""A pack changing how sampling runs, as Advanced-ControlNet, AnimateDiff-Evolved and Easy-Use do
(tests/packs/sampling_pack), on the tiny random-weight SD1.5 checkpoint and a random-weight ControlNet."""

from __future__ import annotations

import sys

import pytest
from _checkpoint import CHECKPOINT, REPO_ROOT, tiny_checkpoint
from compat_helpers import Client, events, start

pytest.importorskip("torch")
pytest.importorskip("comfy_kernel_core_nodes")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sys.path.insert(0, str(REPO_ROOT / "plugins" / "core_nodes" / "tests"))
    from _control_files import write_controlnet

    base = tmp_path_factory.mktemp("sampling_pack")
    write_controlnet(base / "models" / "controlnet" / "tiny_cn.safetensors")
    checkpoint = tiny_checkpoint()
    paths = base / "extra_model_paths.yaml"
    paths.write_text(f"cache:\n  base_path: {checkpoint.parent}\n  checkpoints: .\n")
    srv = start(base, "sampling_pack", keep={"compat", "core_nodes"},
                args=("--cpu", "--extra-model-paths-config", str(paths)))
    yield srv
    srv.stop()
    srv.client.close()


def _ksampler(positive: list, negative: list) -> dict:
    return {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 7.0,
                                                 "sampler_name": "euler", "scheduler": "normal",
                                                 "positive": positive, "negative": negative,
                                                 "latent_image": ["4", 0], "denoise": 1.0}}


def _stats(latent: list) -> dict:
    return {"class_type": "SPStats", "inputs": {"latent": latent}}


def test_control_subclass_guider_swap_and_encoder_part(server):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT.name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny_cn.safetensors"}},
        "6": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 12345678}},
        "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["2", 0], "negative": ["3", 0],
                                                                  "control_net": ["5", 0], "image": ["6", 0],
                                                                  "strength": 0.8, "start_percent": 0.0,
                                                                  "end_percent": 1.0}},
        "8": _ksampler(["7", 0], ["7", 1]), "9": _stats(["8", 0]),
        "10": {"class_type": "SPApplyControl", "inputs": {"positive": ["2", 0], "negative": ["3", 0],
                                                          "control_net": ["5", 0], "image": ["6", 0],
                                                          "strength": 0.8}},
        "11": _ksampler(["10", 0], ["10", 1]), "12": _stats(["11", 0]),
        "13": _ksampler(["2", 0], ["3", 0]), "14": _stats(["13", 0]),
        "15": {"class_type": "SPSwapSamplingFunction", "inputs": {"model": ["1", 0], "positive": ["2", 0],
                                                                  "negative": ["3", 0], "latent_image": ["4", 0],
                                                                  "seed": 3}},
        "16": _stats(["15", 0]),
        "17": {"class_type": "SPEncodeL", "inputs": {"clip": ["1", 1], "text": "a red cube"}},
        "18": _ksampler(["17", 0], ["3", 0]), "19": _stats(["18", 0]),
    }
    with Client(server) as client:
        _, messages = client.run(prompt)
    errors = events(messages, "execution_error")
    assert not errors, [(e["exception_message"], e["traceback"][-3:]) for e in errors]
    out = {e["node"]: e["output"] for e in events(messages, "executed")}
    latent = {node: out[node]["latent"][0] for node in ("9", "12", "14", "16", "19")}

    # The pack's ControlNet subclass, built and copied as Advanced-ControlNet does, controls like the core node.
    assert latent["12"] == latent["9"] and latent["9"]["sum"] != latent["14"]["sum"]
    # Sampling through the swapped-in sampling function gives KSampler's latent; the swap was called per step.
    assert latent["16"] == latent["14"]
    # clip_l's own encoding is CLIPTextEncode's for an SD1.5 CLIP.
    assert latent["19"] == latent["14"]
    seen = max((out[n]["seen"][0] for n in latent), key=lambda s: sum(s.values()))
    assert seen["get_control"] >= 2 and seen["sampling_function"] == 2 and seen["group_norm_cast"] == 1
