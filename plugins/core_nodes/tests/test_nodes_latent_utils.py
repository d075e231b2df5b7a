"""LATENT maths, batching and .latent files against ComfyUI 0.3.64's captured outputs.

``data/latent_utils`` holds the inputs and ComfyUI's results (see its README).
The unit tests call the node classes; ``test_latent_nodes_through_the_server``
runs the same settings as one prompt through a real server, loading the inputs
with LoadLatent from the input folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_kernel_core_nodes.nodes import context
from comfy_kernel_core_nodes.nodes import latent_batch as lb
from comfy_kernel_core_nodes.nodes import latent_files as lf
from comfy_kernel_core_nodes.nodes import latent_ops as lo

DATA = Path(__file__).parent / "data" / "latent_utils"
EXPECTED = json.loads((DATA / "expected.json").read_text())
ATOL = 1e-5


def ref(name: str) -> np.ndarray:
    return np.load(DATA / f"{name}.npy")


def lat(name: str) -> dict:
    return {"samples": torch.from_numpy(ref(f"in_{name}"))}


def run(cls, **kw):
    return cls.execute(**kw).args


def close(tensor, name: str) -> None:
    expected = ref(name)
    assert tuple(tensor.shape) == expected.shape
    np.testing.assert_allclose(tensor.numpy(), expected, atol=ATOL, rtol=1e-5)


def test_arithmetic_matches_comfyui():
    close(run(lo.LatentAdd, samples1=lat("a"), samples2=lat("b"))[0]["samples"], "add")
    close(run(lo.LatentSubtract, samples1=lat("c"), samples2=lat("b"))[0]["samples"], "subtract")
    close(run(lo.LatentMultiply, samples=lat("a"), multiplier=0.37)[0]["samples"], "multiply")
    close(run(lo.LatentInterpolate, samples1=lat("a"), samples2=lat("b"), ratio=0.3)[0]["samples"], "interpolate")
    close(run(lo.LatentConcat, samples1=lat("c"), samples2=lat("a"), dim="-x")[0]["samples"], "concat")
    close(run(lo.LatentCut, samples=lat("d"), dim="y", index=-3, amount=2)[0]["samples"], "cut")


def test_operations_match_comfyui():
    (tone,) = run(lo.LatentOperationTonemapReinhard, multiplier=1.2)
    bright = {"samples": torch.from_numpy(ref("in_a")) * 3}
    close(run(lo.LatentApplyOperation, samples=bright, operation=tone)[0]["samples"], "tonemap")
    (sharp,) = run(lo.LatentOperationSharpen, sharpen_radius=2, sigma=0.8, alpha=0.3)
    close(run(lo.LatentApplyOperation, samples=lat("c"), operation=sharp)[0]["samples"], "sharpen")


def test_transforms_match_comfyui():
    close(lo.LatentBlend().blend(lat("a"), lat("b"), 0.3)[0]["samples"], "blend")
    close(lo.LatentCrop().crop(lat("d"), 64, 64, 16, 200)[0]["samples"], "crop")
    close(lo.LatentFlip().flip(lat("b"), "y-axis: horizontally")[0]["samples"], "flip")
    close(lo.LatentRotate().rotate(lat("b"), "90 degrees")[0]["samples"], "rotate")


def test_interpolate_handles_batches_item_by_item():
    # ComfyUI 0.3.64 broadcasts the channel norm wrongly for batches > 1; we normalise per item.
    two = {"samples": torch.from_numpy(ref("in_c"))}
    (out,) = run(lo.LatentInterpolate, samples1=two, samples2=two, ratio=0.5)
    assert torch.allclose(out["samples"], two["samples"], atol=1e-5)


def test_batching_matches_comfyui():
    (batch,) = run(lb.LatentBatch, samples1=lat("c"), samples2=lat("b"))
    close(batch["samples"], "batch")
    assert batch["batch_index"] == EXPECTED["batch_index"]
    e = {"samples": torch.from_numpy(ref("in_e")), "batch_index": [5, 6, 7]}
    assert run(lb.LatentBatchSeedBehavior, samples=e, seed_behavior="fixed")[0]["batch_index"] == \
        EXPECTED["seed_fixed"]
    assert sorted(run(lb.LatentBatchSeedBehavior, samples=e, seed_behavior="random")[0]) == \
        EXPECTED["seed_random_keys"]
    assert e["batch_index"] == [5, 6, 7]  # the input is not modified


def rebatch_inputs() -> list[dict]:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :32, :] = 1.0
    return [lat("c"), {"samples": torch.from_numpy(ref("in_e")), "noise_mask": mask}, lat("b"), lat("a")]


def test_rebatch_matches_comfyui():
    (items,) = run(lb.RebatchLatents, latents=rebatch_inputs(), batch_size=[2])
    assert len(items) == len(EXPECTED["rebatch"])
    for i, (item, want) in enumerate(zip(items, EXPECTED["rebatch"], strict=True)):
        close(item["samples"], f"rebatch_{i}")
        assert item["batch_index"] == want["batch_index"]
        assert ("noise_mask" in item) == want["has_mask"]
        if want["has_mask"]:
            close(item["noise_mask"], f"rebatch_{i}_mask")


def test_cut_to_batch_and_blend_and_replace_frames():
    video = {"samples": torch.arange(2 * 4 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 4, 5, 2, 2)}
    (cut,) = run(lo.LatentCutToBatch, samples=video, dim="t", slice_size=2)
    assert cut["samples"].shape == (4, 4, 2, 2, 2)  # 5 frames -> 2 slices of 2 per item, the last frame dropped
    assert torch.equal(cut["samples"][1], video["samples"][0, :, 2:4])
    (same,) = run(lo.LatentCutToBatch, samples=lat("a"), dim="t", slice_size=2)  # t of a 4-D latent is channels
    assert same["samples"] is lat("a")["samples"] or same["samples"].shape == (1, 4, 8, 8)
    (blend,) = run(lo.LatentOperationBlend, reference={"samples": torch.ones(1, 4, 2, 2)}, strength=0.25)
    out = blend(latent=torch.zeros(3, 4, 8, 8))
    assert out.shape == (3, 4, 8, 8) and torch.allclose(out, torch.full_like(out, 0.25))
    dest = {"samples": torch.zeros(1, 4, 6, 2, 2)}
    src = {"samples": torch.ones(1, 4, 2, 2, 2)}
    (replaced,) = run(lo.ReplaceVideoLatentFrames, destination=dest, source=src, index=-2)
    assert replaced["samples"][0, 0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 1]
    (unchanged,) = run(lo.ReplaceVideoLatentFrames, destination=dest, source=src, index=5)
    assert unchanged is dest


@pytest.fixture
def input_folder(tmp_path, monkeypatch):
    """The kernel's folder registry with ``tmp_path`` as the input directory."""
    from comfy_kernel.files.folders import DataDirs, FolderRegistry

    dirs = DataDirs.from_base(str(tmp_path / "base"), input=str(tmp_path), output=str(tmp_path / "out"))
    monkeypatch.setattr(context, "_folders", FolderRegistry(dirs))
    (tmp_path / "out").mkdir()
    return tmp_path


def test_load_latent_reads_comfyui_files(input_folder):
    for name in ("legacy.latent", "comfy_saved_00001_.latent"):
        (input_folder / name).write_bytes((DATA / name).read_bytes())
    assert lf.LoadLatent.INPUT_TYPES()["required"]["latent"][0] == ["comfy_saved_00001_.latent", "legacy.latent"]
    close(lf.LoadLatent().load("legacy.latent")[0]["samples"], "load_legacy")
    close(lf.LoadLatent().load("comfy_saved_00001_.latent")[0]["samples"], "load_saved")
    assert lf.LoadLatent.VALIDATE_INPUTS("missing.latent") == "Invalid latent file: missing.latent"


def test_save_latent_writes_comfyui_format(input_folder):
    ui = lf.SaveLatent().save(lat("a"), "comfy_saved", prompt={"1": {"class_type": "X"}},
                              extra_pnginfo={"workflow": {"k": 1}})
    assert ui == EXPECTED["save_ui"]
    data = (input_folder / "out" / "comfy_saved_00001_.latent").read_bytes()
    theirs = (DATA / "comfy_saved_00001_.latent").read_bytes()
    size, their_size = int.from_bytes(data[:8], "little"), int.from_bytes(theirs[:8], "little")
    header = json.loads(data[8:8 + size])
    assert header == EXPECTED["saved_header"] == json.loads(theirs[8:8 + their_size])
    # the tensor bytes are ComfyUI's; the header's key order varies between safetensors runs
    assert data[8 + size:] == theirs[8 + their_size:]


def _write_latent(path: Path, array: np.ndarray) -> None:
    from safetensors.torch import save_file

    save_file({"latent_tensor": torch.from_numpy(array), "latent_format_version_0": torch.tensor([])}, str(path))


def test_latent_nodes_through_the_server(graph_server):
    for name in "abcde":
        _write_latent(graph_server.input_dir / f"in_{name}.latent", ref(f"in_{name}"))

    def load(node_id: str, name: str) -> dict:
        return {node_id: {"class_type": "LoadLatent", "inputs": {"latent": f"in_{name}.latent"}}}

    prompt: dict = {}
    for name in "abcde":
        prompt.update(load(f"in_{name}", name))
    steps = {
        "add": ("LatentAdd", {"samples1": ["in_a", 0], "samples2": ["in_b", 0]}),
        "subtract": ("LatentSubtract", {"samples1": ["in_c", 0], "samples2": ["in_b", 0]}),
        "multiply": ("LatentMultiply", {"samples": ["in_a", 0], "multiplier": 0.37}),
        "interpolate": ("LatentInterpolate", {"samples1": ["in_a", 0], "samples2": ["in_b", 0], "ratio": 0.3}),
        "concat": ("LatentConcat", {"samples1": ["in_c", 0], "samples2": ["in_a", 0], "dim": "-x"}),
        "cut": ("LatentCut", {"samples": ["in_d", 0], "dim": "y", "index": -3, "amount": 2}),
        "batch": ("LatentBatch", {"samples1": ["in_c", 0], "samples2": ["in_b", 0]}),
        "seed": ("LatentBatchSeedBehavior", {"samples": ["batch", 0], "seed_behavior": "fixed"}),
        "sharp_op": ("LatentOperationSharpen", {"sharpen_radius": 2, "sigma": 0.8, "alpha": 0.3}),
        "sharpen": ("LatentApplyOperation", {"samples": ["in_c", 0], "operation": ["sharp_op", 0]}),
        "tone_in": ("LatentMultiply", {"samples": ["in_a", 0], "multiplier": 3.0}),
        "tone_op": ("LatentOperationTonemapReinhard", {"multiplier": 1.2}),
        "tonemap": ("LatentApplyOperation", {"samples": ["tone_in", 0], "operation": ["tone_op", 0]}),
        "blend": ("LatentBlend", {"samples1": ["in_a", 0], "samples2": ["in_b", 0], "blend_factor": 0.3}),
        "crop": ("LatentCrop", {"samples": ["in_d", 0], "width": 64, "height": 64, "x": 16, "y": 200}),
        "flip": ("LatentFlip", {"samples": ["in_b", 0], "flip_method": "y-axis: horizontally"}),
        "rotate": ("LatentRotate", {"samples": ["in_b", 0], "rotation": "90 degrees"}),
        "rebatch": ("RebatchLatents", {"latents": ["in_e", 0], "batch_size": 2}),
        "cut_batch": ("LatentCutToBatch", {"samples": ["in_d", 0], "dim": "x", "slice_size": 4}),
        "save": ("SaveLatent", {"samples": ["in_a", 0], "filename_prefix": "latents/probe"}),
    }
    for node_id, (cls, inputs) in steps.items():
        prompt[node_id] = {"class_type": cls, "inputs": inputs}
        if cls not in ("LatentOperationSharpen", "LatentOperationTonemapReinhard", "SaveLatent"):
            probe = "TestProbeList" if cls == "RebatchLatents" else "TestProbe"
            prompt[f"p_{node_id}"] = {"class_type": probe, "inputs": {"value": [node_id, 0], "name": node_id}}
    out = graph_server.run(prompt)
    for name in ("add", "subtract", "multiply", "interpolate", "concat", "cut", "sharpen", "tonemap", "blend",
                 "crop", "flip", "rotate"):
        np.testing.assert_allclose(out[name]["samples"], ref(name), atol=ATOL, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(out["batch"]["samples"], ref("batch"), atol=ATOL)
    assert out["batch"]["batch_index"] == EXPECTED["batch_index"]
    assert out["seed"]["batch_index"] == [0, 0, 0]
    assert [out[f"rebatch_{i}"]["samples"].shape[0] for i in range(2)] == [2, 1]
    assert out["rebatch_1"]["batch_index"] == [2]
    assert out["cut_batch"]["samples"].shape == (4, 4, 16, 4)
    saved = graph_server.output_dir / "latents" / "probe_00001_.latent"
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(saved))["latent_tensor"], torch.from_numpy(ref("in_a")))


def _normalized_start(samples: np.ndarray, start: int, reference_count: int) -> np.ndarray:
    """NormalizeVideoLatentStart's maths in float64 numpy: per start frame, its channel-and-space statistics
    replaced by the reference frames' (clamped to a band around its own)."""
    out = samples.astype(np.float64).copy()
    first = out[:, :, :start]
    reference = out[:, :, start:start + min(reference_count, samples.shape[2] - 1)]
    mean = first.mean(axis=(1, 3, 4), keepdims=True)
    std = first.std(axis=(1, 3, 4), ddof=1, keepdims=True)
    target_mean = np.clip(reference.mean(), mean - 0.3, mean + 0.35)
    target_std = np.clip(reference.std(ddof=1), std - 0.35, std + 0.5)
    out[:, :, :start] = (first - mean) / (std + 1e-8) * target_std + target_mean
    return out


def test_normalize_video_latent_start(graph_server):
    rng = np.random.default_rng(5)
    frames = np.stack([rng.normal(loc, scale, size=(2, 4, 3, 3)) for loc, scale in
                       [(1.5, 2.0), (0.2, 0.6), (0.0, 1.0), (0.1, 1.1), (-0.1, 0.9), (0.05, 1.0)]], axis=2)
    frames = frames.astype(np.float32)  # [batch 2, channels 4, frames 6, 3, 3]
    _write_latent(graph_server.input_dir / "video.latent", frames)
    _write_latent(graph_server.input_dir / "still.latent", frames[:, :, :1].copy())
    prompt = {"video": {"class_type": "LoadLatent", "inputs": {"latent": "video.latent"}},
              "still": {"class_type": "LoadLatent", "inputs": {"latent": "still.latent"}}}
    cases = {"two_of_three": ("video", 2, 3), "one_of_all": ("video", 1, 100), "single": ("still", 4, 5)}
    for name, (source, start, reference) in cases.items():
        prompt[name] = {"class_type": "NormalizeVideoLatentStart", "inputs": {
            "latent": [source, 0], "start_frame_count": start, "reference_frame_count": reference}}
        prompt[f"{name}_probe"] = {"class_type": "TestProbe", "inputs": {"value": [name, 0], "name": name}}
    out = graph_server.run(prompt)

    two = out["two_of_three"]["samples"]
    np.testing.assert_allclose(two, _normalized_start(frames, 2, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(two[:, :, 2:], frames[:, :, 2:])  # the reference and later frames stay
    # the bright first frame is pulled towards the reference, by at most the 0.3 the clamp allows
    assert 0.25 < frames[:, :, 0].mean() - two[:, :, 0].mean() <= 0.3 + 1e-5
    np.testing.assert_allclose(out["one_of_all"]["samples"], _normalized_start(frames, 1, 100), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(out["single"]["samples"], frames[:, :, :1])  # one frame: nothing to match
