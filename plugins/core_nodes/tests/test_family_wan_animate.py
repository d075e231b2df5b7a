"""Wan 2.2 Animate: the transformer and WanAnimateToVideo against ComfyUI 0.3.64's recorded outputs, the file
detected with every key, the node's contract.

diffusers has no Animate transformer; ``data/wan_animate/reference.npz``
holds what ComfyUI's code computed on the weights and inputs of
``_files_wan_animate.py`` (``data/wan_animate/record.py``). Measured in
float32 on a CPU: see the tolerances at each test (they leave room for other
CPUs). The face crops are 512x512 through the released encoders' sizes, so
the cases with faces take a few seconds each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _files_wan_animate import (
    FACE_STRIDE,
    ClipVisionStub,
    StubVAE,
    animate_file,
    animate_weights,
    node_cases,
    recorded_kernels,
    recorded_shapes,
    reference,
    transformer_inputs,
)
from _files_wan_s2v import run_network
from _oracle import close

from comfy_kernel_core_nodes.families.wan.animate import AnimateConfig, WanAnimateTransformer, animate_layout
from comfy_kernel_core_nodes.families.wan.animate_nodes import WanAnimateToVideo
from comfy_kernel_core_nodes.families.wan.models import transformer_layout
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_diffusion_model, model_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")

CONFIG = AnimateConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=10, text_dim=128)
RTOL = 1e-5
CONTRACT = Path(__file__).parent / "data" / "comfyui-0.3.64-object_info.local.json"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


@pytest.fixture(scope="module")
def network() -> WanAnimateTransformer:
    net = WanAnimateTransformer(CONFIG)
    net.load_state_dict(animate_weights(recorded_shapes()), strict=True)
    return net.eval()


def test_layout_matches_comfyuis_network() -> None:
    ours = {k: tuple(v.shape) for k, v in WanAnimateTransformer(CONFIG).state_dict().items()}
    assert ours == recorded_shapes()


def test_animate_file_is_detected_with_every_key(ref: dict[str, np.ndarray]) -> None:
    """The file carries ComfyUI's whole state dict, blur filters included (read as fixed, so not loaded)."""
    path = animate_file()
    found, prefix = model_config(str(path))
    assert type(found).__name__ == "Wan22Animate" and prefix == ""
    unet = found.unet_config
    assert (unet["model_type"], unet["in_dim"], unet["num_layers"], unet["dim"]) == ("animate", 36, 10, 256)
    assert animate_layout(transformer_layout(unet)) == CONFIG
    assert set(tensor_shapes(str(path))) == set(recorded_shapes()) | set(recorded_kernels())
    patcher = load_diffusion_model(str(path))
    assert set(recorded_shapes()) <= patcher.model.weights.keys
    with patcher.use() as model:
        net = model.diffusion_model
        assert type(net).__name__ == "WanAnimateTransformer"
        assert set(net.state_dict()) == set(recorded_shapes())
        close(run_network(net, transformer_inputs()["pose"]), torch.from_numpy(ref["pose_out"]), rtol=RTOL)


@pytest.mark.parametrize("case", ["full", "face", "pose", "text"])
def test_transformer_matches_comfyui(network: WanAnimateTransformer, ref: dict[str, np.ndarray], case: str) -> None:
    """full: CLIP tokens, pose and faces at a batch of two, fewer face frames than latent frames; face: more face
    frames than latent frames; pose: a pose video longer than the video; text: odd sizes, padded to patches."""
    inputs = transformer_inputs()[case]
    np.testing.assert_allclose([float(v.double().abs().sum()) for v in inputs.values()], ref[f"{case}_checksum"],
                               rtol=1e-9)
    close(run_network(network, inputs), torch.from_numpy(ref[f"{case}_out"]), rtol=RTOL)


def test_face_encoders_match_comfyui(network: WanAnimateTransformer, ref: dict[str, np.ndarray]) -> None:
    """The motion vectors of each crop, and the face tokens per latent frame (zeros first and past the end)."""
    faces = transformer_inputs()["face"]["face_pixel_values"]
    with torch.no_grad():
        motion = network.motion_vectors(faces)
        tokens = network.face_tokens(motion, 4)
    close(motion[0], torch.from_numpy(ref["face_motion"]), rtol=RTOL)
    close(tokens, torch.from_numpy(ref["face_tokens"]), rtol=RTOL)
    assert not tokens[:, 0].any() and not tokens[:, 3].any()


def test_model_conditions_from_the_nodes_values() -> None:
    """Faces go in as they are, the pose latents after the latent format's scaling, the I2V channels as mask and
    image (20 of them)."""
    patcher = load_diffusion_model(str(animate_file()))
    noise = torch.zeros(1, 16, 3, 4, 6)
    faces, pose = torch.rand(1, 3, 5, 512, 512), torch.randn(1, 16, 2, 4, 6)
    conds = patcher.model.extra_conds(noise=noise, device=torch.device("cpu"), cross_attn=torch.zeros(1, 3, 128),
                                      face_video_pixels=faces, pose_video_latent=pose,
                                      concat_latent_image=torch.randn(1, 16, 3, 4, 6),
                                      concat_mask=torch.zeros(1, 4, 3, 4, 6))
    assert conds["face_pixel_values"].cond is faces
    torch.testing.assert_close(conds["pose_latents"].cond, patcher.model.process_latent_in(pose))
    assert conds["c_concat"].cond.shape == (1, 20, 3, 4, 6)


@pytest.mark.parametrize("case", list(node_cases()))
def test_node_matches_comfyui(ref: dict[str, np.ndarray], case: str) -> None:
    """full: every input, one frame in; continue: the end of a previous chunk, a one-frame mask, a face video
    that ends before the offset; bare: two reference frames and nothing else."""
    cond = [[torch.zeros(1, 3, 8), {}]]
    clip = ClipVisionStub()
    positive, negative, latent, trim_latent, trim_image, offset = WanAnimateToVideo.execute(
        cond, cond, StubVAE(), clip_vision_output=clip, **node_cases()[case]).result
    assert [trim_latent, trim_image, offset] == ref[f"node_{case}_ints"].tolist()
    assert list(latent["samples"].shape) == ref[f"node_{case}_latent_shape"].tolist() and not latent["samples"].any()
    pos, neg = positive[0][1], negative[0][1]
    assert sorted(pos) == json.loads(str(ref[f"node_{case}_keys"])) == sorted(neg)
    assert pos["clip_vision_output"] is clip and neg["clip_vision_output"] is clip
    for key in ("concat_latent_image", "concat_mask", "pose_video_latent"):
        if key in pos:
            np.testing.assert_allclose(pos[key].numpy(), ref[f"node_{case}_{key}"], rtol=1e-6, atol=1e-6)
            assert torch.equal(pos[key], neg[key])
    if "face_video_pixels" in pos:
        face = pos["face_video_pixels"]
        assert list(face.shape) == ref[f"node_{case}_face_shape"].tolist()
        np.testing.assert_allclose(face[..., :: FACE_STRIDE[0], :: FACE_STRIDE[1]].numpy(),
                                   ref[f"node_{case}_face_sample"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose([float(face.double().sum()), float(face.double().abs().sum())],
                                   ref[f"node_{case}_face_sums"], rtol=1e-6)
        assert torch.equal(neg["face_video_pixels"], torch.full_like(face, -1.0))


def test_node_contract_matches_comfyui() -> None:
    from test_nodes_contract import contract_differences

    from comfy_kernel.nodes.info import node_info
    from comfy_kernel.nodes.registry import NodeRegistry

    registry = NodeRegistry()
    registry.register("WanAnimateToVideo", WanAnimateToVideo, python_module="comfy_extras.nodes_wan")
    (entry,) = registry.entries()
    ours = json.loads(json.dumps(node_info(entry)))
    assert contract_differences("WanAnimateToVideo", ours, json.loads(CONTRACT.read_text())["WanAnimateToVideo"]) == []
