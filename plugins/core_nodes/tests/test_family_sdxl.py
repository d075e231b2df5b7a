"""SDXL against ComfyUI's captures: detection, both text encoders, the ADM vector and one UNet call.

These load the full-size random-weight SDXL base checkpoint (6.9 GB; about 13 GB
of RAM with the UNet in fp32), so they are marked slow. The whole workflows
run through the server in test_parity_sdxl.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comfy_kernel_core_nodes.model.loading import load_checkpoint

# Writing the 6.9 GB checkpoint the first time takes minutes on two busy cores: beyond the default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.sdxl, pytest.mark.timeout(3600),
              pytest.mark.usefixtures("single_torch_thread")]


def _load(folder, name):
    return torch.from_numpy(np.load(folder / name))


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


@pytest.fixture(scope="module")
def sdxl(sdxl_checkpoint):
    yield load_checkpoint(str(sdxl_checkpoint))
    from comfy_kernel import gpu

    gpu.model_manager().unload_all()  # 13 GB: free them before the next module (the SDXL server) starts


def test_detected_as_sdxl_with_both_text_encoders(sdxl):
    model, clip, vae = sdxl
    config = model.model.model_config
    assert config.family == "sdxl" and model.model.latent_format.scale_factor == 0.13025
    assert config.unet_config["transformer_depth_output"] == (0, 0, 0, 2, 2, 2, 10, 10, 10)
    keys = clip.cond_stage_model.state_dict_keys()
    assert "clip_l.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in keys
    assert "clip_g.transformer.text_model.encoder.layers.31.self_attn.q_proj.weight" in keys
    assert "clip_g.transformer.text_model.text_projection.weight" in keys
    assert vae.latent_channels == 4


@pytest.mark.parametrize("workflow", ["sdxl_txt2img", "sdxl_txt2img_sdxlencode"])
def test_tokens_and_conditioning_match(sdxl, reference_outputs, workflow):
    from comfy_kernel_core_nodes.families.sd.nodes import CLIPTextEncodeSDXL

    _, clip, _ = sdxl
    folder = reference_outputs / workflow
    for side in ("positive", "negative"):
        captured = json.loads((folder / f"tokens_{side}.json").read_text())
        if captured["node"] == "CLIPTextEncodeSDXL":
            tokens = clip.tokenize(captured["text_g"])
            tokens["l"] = clip.tokenize(captured["text_l"])["l"]
            node = CLIPTextEncodeSDXL.execute(clip, 1024, 1024, 0, 0, 1024, 1024, captured["text_g"],
                                              captured["text_l"])
            cond = node.result[0]
        else:
            tokens = clip.tokenize(captured["text"])
            cond = clip.encode_from_tokens_scheduled(tokens)
        for name in ("g", "l"):
            assert [[[t, w] for t, w in chunk] for chunk in tokens[name]] == captured["tokens"][name]
        assert _rel(cond[0][0], _load(folder, f"cond_{side}.npy")) <= 1e-5
        assert _rel(cond[0][1]["pooled_output"], _load(folder, f"cond_{side}_pooled.npy")) <= 1e-5


@pytest.mark.parametrize("workflow", ["sdxl_txt2img", "sdxl_txt2img_sdxlencode"])
def test_adm_vector_matches(sdxl, reference_outputs, workflow):
    model, _, _ = sdxl
    folder = reference_outputs / workflow
    meta = json.loads((folder / "cond_positive_meta.json").read_text())
    extra = {k: v for k, v in meta.items() if k in ("width", "height", "crop_w", "crop_h", "target_width",
                                                    "target_height")}
    noise = torch.zeros(1, 4, 8, 8)
    for side in ("positive", "negative"):
        options = extra if side == "positive" else {}
        params = {"pooled_output": _load(folder, f"cond_{side}_pooled.npy"), "width": 64, "height": 64,
                  **options}
        y = model.model.encode_adm(noise=noise, device="cpu", **params)
        assert _rel(y, _load(folder, f"adm_y_{side}.npy")) <= 1e-5


def test_one_unet_call_matches(sdxl, reference_outputs):
    """Negative and positive in one batch, as ComfyUI ran it; denoised within 1e-5 of ComfyUI's."""
    model, _, _ = sdxl
    folder = reference_outputs / "sdxl_txt2img"
    x, sigma = _load(folder, "ksampler0_step_x.npy")[0], _load(folder, "ksampler0_step_sigma.npy")[0]
    context = torch.cat([_load(folder, "cond_negative.npy"), _load(folder, "cond_positive.npy")])
    y = torch.cat([_load(folder, "adm_y_negative.npy"), _load(folder, "adm_y_positive.npy")])
    with model.use() as m:
        out = m.apply_model(torch.cat([x, x]), torch.cat([sigma, sigma]), c_crossattn=context, y=y)
    assert _rel(out[1:], _load(folder, "ksampler0_step_cond_denoised.npy")[0]) <= 1e-5
    assert _rel(out[:1], _load(folder, "ksampler0_step_uncond_denoised.npy")[0]) <= 1e-5
