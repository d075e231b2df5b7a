"""The 20 hook nodes through the server, on the tiny checkpoint and a random LoRA."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _control_files import tiny_lora_sd  # noqa: E402
from _random_weights import write  # noqa: E402
from _vision_files import link  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(graph_server, sd15_tiny_checkpoint):
    link(sd15_tiny_checkpoint, graph_server.models_dir("checkpoints") / "tiny.safetensors")
    write(graph_server.models_dir("loras") / "tiny_lora.safetensors", tiny_lora_sd())
    probes = graph_server.input_dir / "probes"
    probes.mkdir(parents=True, exist_ok=True)
    np.save(probes / "floats.npy", np.array([0.0, 0.5, 1.0], dtype=np.float32))
    return graph_server


def _ks(name, positive, negative, model=("ckpt", 0)):
    return {
        f"ks_{name}": {"class_type": "KSampler", "inputs": {
            "model": list(model), "seed": 2, "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": positive, "negative": negative, "latent_image": ["lat", 0], "denoise": 1.0}},
        f"p_{name}": {"class_type": "TestProbe", "inputs": {"value": [f"ks_{name}", 0], "name": name}},
    }


def _node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def test_hook_nodes_through_the_server(server):
    g = {
        "ckpt": _node("CheckpointLoaderSimple", ckpt_name="tiny.safetensors"),
        "pos": _node("CLIPTextEncode", clip=["ckpt", 1], text="a cat"),
        "neg": _node("CLIPTextEncode", clip=["ckpt", 1], text=""),
        "lat": _node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "lora_model": _node("LoraLoaderModelOnly", model=["ckpt", 0], lora_name="tiny_lora.safetensors",
                            strength_model=0.9),
        "hook": _node("CreateHookLoraModelOnly", lora_name="tiny_lora.safetensors", strength_model=0.9),
        "hook_full": _node("CreateHookLora", lora_name="tiny_lora.safetensors", strength_model=0.9,
                           strength_clip=0.6, prev_hooks=["hook", 0]),
        "same_ckpt": _node("CreateHookModelAsLora", ckpt_name="tiny.safetensors", strength_model=1.0,
                           strength_clip=1.0),
        "same_ckpt_mo": _node("CreateHookModelAsLoraModelOnly", ckpt_name="tiny.safetensors", strength_model=0.5),
        "kf0": _node("CreateHookKeyframe", strength_mult=0.0, start_percent=0.0),
        "kf_interp": _node("CreateHookKeyframesInterpolated", strength_start=0.0, strength_end=1.0,
                           interpolation="ease_in", start_percent=0.0, end_percent=1.0, keyframes_count=3,
                           print_keyframes=False),
        "floats": _node("TestLoad", name="floats.npy"),
        "kf_floats": _node("CreateHookKeyframesFromFloats", floats_strength=["floats", 0], start_percent=0.0,
                           end_percent=1.0, print_keyframes=False, prev_hook_kf=["kf0", 0]),
        "hook_off": _node("SetHookKeyframes", hooks=["hook", 0], hook_kf=["kf0", 0]),
        "hook_interp": _node("SetHookKeyframes", hooks=["hook", 0], hook_kf=["kf_interp", 0]),
        "hook_floats": _node("SetHookKeyframes", hooks=["hook", 0], hook_kf=["kf_floats", 0]),
        "c2": _node("CombineHooks2", hooks_A=["hook", 0], hooks_B=["same_ckpt_mo", 0]),
        "c4": _node("CombineHooks4", hooks_A=["hook_off", 0], hooks_D=["same_ckpt", 0]),
        "c8": _node("CombineHooks8", hooks_B=["c2", 0], hooks_H=["hook_floats", 0]),
        "range": _node("ConditioningTimestepsRange", start_percent=0.25, end_percent=0.75),
        "both": _node("PairConditioningSetProperties", positive_NEW=["pos", 0], negative_NEW=["neg", 0],
                      strength=1.0, set_cond_area="default", hooks=["hook", 0]),
        "both_off": _node("PairConditioningSetProperties", positive_NEW=["pos", 0], negative_NEW=["neg", 0],
                          strength=1.0, set_cond_area="default", hooks=["c4", 0]),
        "both_c8": _node("PairConditioningSetProperties", positive_NEW=["pos", 0], negative_NEW=["neg", 0],
                         strength=1.0, set_cond_area="default", hooks=["c8", 0]),
        "both_interp": _node("PairConditioningSetProperties", positive_NEW=["pos", 0], negative_NEW=["neg", 0],
                             strength=1.0, set_cond_area="default", hooks=["hook_interp", 0]),
        "pos_only": _node("ConditioningSetProperties", cond_NEW=["pos", 0], strength=1.0, set_cond_area="default",
                          hooks=["hook", 0], timesteps=["range", 0]),
        "pos_combined": _node("ConditioningSetPropertiesAndCombine", cond=["pos", 0], cond_NEW=["pos", 0],
                              strength=0.5, set_cond_area="default", hooks=["hook", 0], timesteps=["range", 1]),
        "pair_combined": _node("PairConditioningSetPropertiesAndCombine", positive=["pos", 0], negative=["neg", 0],
                               positive_NEW=["pos", 0], negative_NEW=["neg", 0], strength=1.0,
                               set_cond_area="default", hooks=["hook_full", 0], timesteps=["range", 2]),
        "pair_default": _node("PairConditioningSetDefaultCombine", positive=["pos", 0], negative=["neg", 0],
                              positive_DEFAULT=["pos", 0], negative_DEFAULT=["neg", 0], hooks=["hook", 0]),
        "cond_default": _node("ConditioningSetDefaultCombine", cond=["pos", 0], cond_DEFAULT=["neg", 0],
                              hooks=["hook", 0]),
        "pair_plain": _node("PairConditioningCombine", positive_A=["pos", 0], negative_A=["neg", 0],
                            positive_B=["pos", 0], negative_B=["neg", 0]),
        "clip_hooked": _node("SetClipHooks", clip=["ckpt", 1], apply_to_conds=True, schedule_clip=True,
                             hooks=["hook_full", 0]),
        "pos_clip": _node("CLIPTextEncode", clip=["clip_hooked", 0], text="a cat"),
        "p_range": _node("TestProbe", value=["pos_only", 0], name="range"),
        "p_combined": _node("TestProbe", value=["pos_combined", 0], name="combined"),
        "p_default": _node("TestProbe", value=["cond_default", 0], name="default"),
        "p_clip": _node("TestProbe", value=["pos_clip", 0], name="clip_cond"),
    }
    g.update(_ks("plain", ["pos", 0], ["neg", 0]))
    g.update(_ks("lora", ["pos", 0], ["neg", 0], model=("lora_model", 0)))
    g.update(_ks("both", ["both", 0], ["both", 1]))
    g.update(_ks("both_off", ["both_off", 0], ["both_off", 1]))
    g.update(_ks("both_c8", ["both_c8", 0], ["both_c8", 1]))
    g.update(_ks("both_interp", ["both_interp", 0], ["both_interp", 1]))
    g.update(_ks("pos_only", ["pos_only", 0], ["neg", 0]))
    g.update(_ks("pair_combined", ["pair_combined", 0], ["pair_combined", 1]))
    g.update(_ks("pair_default", ["pair_default", 0], ["pair_default", 1]))
    g.update(_ks("pair_plain", ["pair_plain", 0], ["pair_plain", 1]))
    g.update(_ks("clip_hooked", ["pos_clip", 0], ["neg", 0]))
    out = server.run(g, timeout=1800)
    plain, lora = out["plain"]["samples"], out["lora"]["samples"]
    assert np.abs(lora - plain).max() > 1e-3
    assert np.array_equal(out["both"]["samples"], lora)  # the hook on every entry = the LoRA'd model
    assert np.array_equal(out["both_off"]["samples"], plain)  # strength 0, plus a zero model difference
    assert np.array_equal(out["pair_default"]["samples"], plain)  # defaults fill nothing when all is covered
    for name in ("both_c8", "both_interp", "pos_only", "pair_combined", "clip_hooked"):
        assert np.abs(out[name]["samples"] - plain).max() > 1e-3, name
    assert not np.array_equal(out["both_interp"]["samples"], lora)
    (entry,) = out["range"]
    assert entry["options"]["start_percent"] == 0.25 and entry["options"]["end_percent"] == 0.75
    assert "HookGroup" in entry["options"]["hooks"]
    first, second = out["combined"]
    assert "hooks" not in first["options"] and "HookGroup" in second["options"]["hooks"]
    assert (second["options"]["start_percent"], second["options"]["end_percent"]) == (0.0, 0.25)
    assert [e["options"].get("default") for e in out["default"]] == [None, True]
    assert [(e["options"]["clip_start_percent"], e["options"]["clip_end_percent"]) for e in out["clip_cond"]] == \
        [(0.0, 1.0)]
