"""Phantom: subject frames after the video's through the Wan transformer, and WanPhantomSubjectToVideo,
against ComfyUI 0.3.64's recorded outputs (``data/wan_phantom/record.py``; diffusers' Wan transformer has no
such input)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _files_wan import transformer_config, transformer_file
from _files_wan_humo import StubVAE
from _files_wan_phantom import CASES, case_inputs, reference, subject_images
from _files_wan_s2v import random_weights, run_network
from _oracle import close

from comfy_kernel_core_nodes.families.wan.nodes import WanPhantomSubjectToVideo
from comfy_kernel_core_nodes.families.wan.transformer import WanTransformer
from comfy_kernel_core_nodes.model.loading import load_diffusion_model

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return reference()


@pytest.fixture(scope="module")
def network(ref: dict[str, np.ndarray]) -> WanTransformer:
    shapes = {k: tuple(v) for k, v in json.loads(str(ref["wan_shapes"])).items()}
    net = WanTransformer(transformer_config("t2v"))
    net.load_state_dict(random_weights(shapes), strict=True)
    return net.eval()


@pytest.mark.parametrize("case", list(CASES))
def test_transformer_with_subject_frames_matches_comfyui(network: WanTransformer, ref: dict[str, np.ndarray],
                                                         case: str) -> None:
    inputs = case_inputs(case)
    np.testing.assert_allclose([float(v.double().abs().sum()) for v in inputs.values()], ref[f"{case}_checksum"],
                               rtol=1e-9)
    out = run_network(network, inputs)
    assert out.shape == inputs["x"].shape  # only the video's frames come back
    close(out, torch.from_numpy(ref[f"{case}_out"]), rtol=1e-5)


def test_subject_frames_change_the_video(network: WanTransformer) -> None:
    inputs = case_inputs("subjects")
    without = {k: v for k, v in inputs.items() if k != "time_dim_concat"}
    assert (run_network(network, inputs) - run_network(network, without)).abs().max() > 1e-3


def test_node_matches_comfyui(ref: dict[str, np.ndarray]) -> None:
    positive, negative = [[torch.ones(1, 2, 4), {"a": 1}]], [[torch.zeros(1, 2, 4), {"b": 2}]]
    pos, neg_text, neg_img_text, latent = WanPhantomSubjectToVideo.execute(
        positive, negative, StubVAE(), 32, 48, 9, 2, subject_images()).args
    assert tuple(latent["samples"].shape) == tuple(ref["node_latent_shape"]) == (2, 16, 3, 6, 4)
    for cond, key in ((pos, "node_positive"), (neg_text, "node_negative_text"),
                      (neg_img_text, "node_negative_img_text")):
        np.testing.assert_allclose(cond[0][1]["time_dim_concat"].numpy(), ref[key], rtol=1e-6, atol=1e-7)
    assert pos[0][1]["a"] == 1 and neg_text[0][1]["b"] == 2 and neg_img_text[0][1]["b"] == 2
    assert "time_dim_concat" not in positive[0][1]  # the inputs are left alone


def test_node_without_images_passes_the_conditioning_through() -> None:
    positive, negative = [[torch.ones(1, 2, 4), {}]], [[torch.zeros(1, 2, 4), {}]]
    pos, neg_text, neg_img_text, latent = WanPhantomSubjectToVideo.execute(
        positive, negative, StubVAE(), 64, 32, 5, 1).args
    assert pos is positive and neg_text is negative and neg_img_text is negative
    assert tuple(latent["samples"].shape) == (1, 16, 2, 4, 8)


def test_model_scales_the_subject_latents() -> None:
    """``time_dim_concat`` reaches the transformer after the latent format's scaling, as the noise does."""
    patcher = load_diffusion_model(str(transformer_file("t2v")))
    subjects = torch.randn(1, 16, 2, 4, 6)
    conds = patcher.model.extra_conds(noise=torch.zeros(1, 16, 2, 4, 6), device=torch.device("cpu"),
                                      cross_attn=torch.zeros(1, 3, 128), time_dim_concat=subjects)
    torch.testing.assert_close(conds["time_dim_concat"].cond, patcher.model.process_latent_in(subjects))
