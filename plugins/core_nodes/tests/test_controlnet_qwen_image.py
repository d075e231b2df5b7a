"""InstantX's Qwen-Image ControlNet: the released (diffusers) key layout loaded without missing weights, the
residuals against diffusers' QwenImageControlNetModel, their effect on the transformer, and the
image_qwen_image_instantx_controlnet template (Lotus depth -> ControlNet -> Qwen-Image) through the server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from _files_lotus import place_lotus_depth_files  # noqa: E402
from _files_qwen import instantx_controlnet, place, qwen25_vl_fp8_scaled, qwen_image_fp8, wan21_vae_narrow  # noqa: E402
from _templates import template  # noqa: E402
from test_family_qwen_e2e import qwen_lora  # noqa: E402

from comfy_kernel_core_nodes.families.qwen_image.transformer import QwenImageConfig, QwenImageTransformer  # noqa: E402
from comfy_kernel_core_nodes.model.controlnet import ControlNet, load_controlnet  # noqa: E402

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

#: 2 heads of 128 (the loader reads the head count as width / 128), a short text width
SMALL = dict(num_layers=2, attention_head_dim=128, num_attention_heads=2, joint_attention_dim=24)


def _reference(seed: int = 0, zero_out: bool = False, hint_channels: int = 64):
    torch.manual_seed(seed)
    net = diffusers.QwenImageControlNetModel(in_channels=64, extra_condition_channels=hint_channels - 64, **SMALL)
    with torch.no_grad():
        for name, tensor in net.named_parameters():
            if zero_out and name.startswith("controlnet_blocks."):
                tensor.zero_()
            else:
                tensor.copy_(torch.randn_like(tensor) * 0.05)
    return net.eval()


def _write(path: Path, net) -> Path:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _pack(latent: torch.Tensor) -> torch.Tensor:
    b, c, _, h, w = latent.shape
    return latent[:, :, 0].view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * 4)


def _inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(1, 16, 1, 8, 12, generator=g), "hint": torch.randn(1, 16, 1, 8, 12, generator=g),
            "context": torch.randn(1, 7, 24, generator=g), "timesteps": torch.tensor([0.7])}


def test_released_layout_loads_with_every_tensor_placed(tmp_path):
    reference = _reference()
    control = load_controlnet(str(_write(tmp_path / "union.safetensors", reference)))
    assert isinstance(control, ControlNet) and control.compression_ratio == 1 and control.extra_conds == []
    assert control.latent_format.latent_channels == 16 and not control.concat_mask
    net = control.control_model
    placed = net.state_dict()
    assert set(placed) == set(reference.state_dict())
    assert torch.equal(placed["controlnet_x_embedder.weight"], reference.controlnet_x_embedder.weight)
    assert len(net.transformer_blocks) == 2 and net.config.num_attention_heads == 2


def test_inpainting_file_concatenates_the_mask(tmp_path):
    control = load_controlnet(str(_write(tmp_path / "inpaint.safetensors", _reference(hint_channels=68))))
    assert control.concat_mask and control.control_model.controlnet_x_embedder.weight.shape[1] == 68


def test_residuals_match_diffusers(tmp_path):
    reference = _reference()
    control = load_controlnet(str(_write(tmp_path / "union.safetensors", reference)))
    a = _inputs()
    with torch.no_grad():
        ours = control.control_model(**a)["input"]
        expected = reference(hidden_states=_pack(a["x"]), controlnet_cond=_pack(a["hint"]),
                             encoder_hidden_states=a["context"], timestep=a["timesteps"],
                             img_shapes=[[(1, 4, 6)]]).controlnet_block_samples
    assert len(ours) == 60 and ours[0] is ours[29] and ours[30] is ours[59]  # 2 blocks cover 60
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours[30], expected[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("zero_out", [False, True])
def test_residuals_change_the_transformer_output_unless_zero_initialised(tmp_path, zero_out):
    control = load_controlnet(str(_write(tmp_path / "cn.safetensors", _reference(3, zero_out))))
    config = QwenImageConfig(in_channels=64, num_layers=2, num_attention_heads=2, joint_attention_dim=24)
    torch.manual_seed(4)
    transformer = QwenImageTransformer(config).eval()
    with torch.no_grad():
        for tensor in transformer.parameters():
            tensor.copy_(torch.randn_like(tensor) * 0.05)
        a = _inputs(5)
        residuals = control.control_model(**a)
        plain = transformer(a["x"], a["timesteps"], a["context"])
        controlled = transformer(a["x"], a["timesteps"], a["context"], control=residuals)
    assert torch.equal(plain, controlled) == zero_out


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_instantx_controlnet_template_runs_through_the_server(graph_server):
    from PIL import Image

    models = graph_server.models_dir
    place(qwen_image_fp8(), models("diffusion_models"), "qwen_image_fp8_e4m3fn.safetensors")
    place(qwen25_vl_fp8_scaled(), models("text_encoders"), "qwen_2.5_vl_7b_fp8_scaled.safetensors")
    place(wan21_vae_narrow(), models("vae"), "qwen_image_vae.safetensors")
    place(instantx_controlnet(), models("controlnet"), "Qwen-Image-InstantX-ControlNet-Union.safetensors")
    save_file(qwen_lora(), str(models("loras") / "Qwen-Image-Lightning-4steps-V1.0.safetensors"))
    place_lotus_depth_files(models)
    graph_server.input_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(graph_server.input_dir / "image_qwen_image_instantx_controlnet_input_image.jpg")
    converted = graph_server.server.post("/api/workflows/convert",
                                         json={"workflow": template("image_qwen_image_instantx_controlnet")}).json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    for node in prompt.values():
        if node["class_type"] == "FluxKontextImageScale":  # keep the 64x64 input (it would scale to ~1 MP)
            node.update(class_type="ImageScale", inputs={"image": node["inputs"]["image"], "width": 64,
                                                         "height": 64, "upscale_method": "nearest-exact",
                                                         "crop": "disabled"})
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    assert {"ControlNetLoader", "ControlNetApplyAdvanced", "LoraLoaderModelOnly"} <= {
        n["class_type"] for n in prompt.values()}
    outputs = graph_server.outputs(prompt, timeout=1500)
    saved = [item for key, out in outputs.items() if prompt[key]["class_type"] == "SaveImage"
             for item in out.get("images", [])]
    images = [np.asarray(Image.open(graph_server.output_dir / i["subfolder"] / i["filename"])) for i in saved]
    assert len(images) == 1 and images[0].shape == (64, 64, 3) and images[0].std() > 0
