"""Flux.1 control LoRAs (BFL's depth / canny LoRAs): every key applied, ``img_in`` widened to 128 inputs, the
concat image's latent added to the model input because of it, and the flux_depth_lora_example template
(Lotus depth -> InstructPixToPixConditioning -> Flux dev with the depth LoRA) through the server.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _files_lotus import place_lotus_depth_files  # noqa: E402
from _flux import T5_WIDTH, clip_l_state_dict, flux_params, flux_state_dict, t5_state_dict, vae16_state_dict  # noqa: E402
from _random_weights import write  # noqa: E402
from _templates import template  # noqa: E402

from comfy_kernel_core_nodes.model.loading import load_diffusion_model  # noqa: E402
from comfy_kernel_core_nodes.model.lora import load_lora_for_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def control_lora(params, rank: int = 4, seed: int = 9) -> dict[str, torch.Tensor]:
    """BFL's layout: bare model names, ``lora_A``/``lora_B`` on every linear layer (``img_in`` reading 128
    features and with a ``lora_B.bias``), the q/k norm scales stored whole."""
    from comfy_kernel_core_nodes.families.flux.model import Flux

    with torch.device("meta"):
        net = Flux(params)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear):
            width_in = 128 if name == "img_in" else module.in_features
            out[f"{name}.lora_A.weight"] = torch.randn(rank, width_in, generator=g) * 0.05
            out[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.05
            if name == "img_in":
                out[f"{name}.lora_B.bias"] = torch.randn(module.out_features, generator=g) * 0.05
        elif name.endswith(("key_norm", "query_norm")):
            out[f"{name}.scale"] = 1 + torch.randn(module.scale.shape, generator=g) * 0.05
    return {k: v.to(torch.bfloat16) for k, v in out.items()}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flux") / "flux1-dev.safetensors"
    write(path, flux_state_dict(flux_params(), dtype=torch.float32))
    return path


def test_every_key_is_applied_and_img_in_takes_the_concat_image(model_file, caplog):
    patcher = load_diffusion_model(str(model_file))
    lora = control_lora(flux_params())
    with caplog.at_level(logging.WARNING):
        patched, _ = load_lora_for_models(patcher, None, lora, 1.0, 0.0)
    assert not [r for r in caplog.records if "not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]
    noise = torch.randn(1, 16, 8, 8)
    image = torch.randn(1, 16, 8, 8)
    plain = patcher.model.concat_cond(noise=noise, device="cpu", concat_latent_image=image)
    assert plain is None  # Flux dev alone takes 64 = 16 x 2 x 2 inputs: no concat
    with patched.use() as model:
        assert model.diffusion_model.img_in.weight.shape[1] == 128
        concat = model.concat_cond(noise=noise, device="cpu", concat_latent_image=image)
        torch.testing.assert_close(concat, model.process_latent_in(image))
        x = torch.randn(1, 16, 8, 8)
        sigma = torch.tensor([0.8])
        context, pooled = torch.randn(1, 4, T5_WIDTH), torch.randn(1, 768)
        conds = model.extra_conds(noise=x, device="cpu", concat_latent_image=image, cross_attn=context,
                                  pooled_output=pooled)
        kwargs = {k: v.cond for k, v in conds.items()}
        out = model.apply_model(x, sigma, **kwargs)
        kwargs["c_concat"] = model.process_latent_in(torch.randn(1, 16, 8, 8))
        other = model.apply_model(x, sigma, **kwargs)
    assert out.shape == x.shape and not torch.equal(out, other)  # the concat image reaches the network


@pytest.mark.slow
def test_flux_depth_lora_template_runs_through_the_server(graph_server):
    from PIL import Image

    models = graph_server.models_dir
    write(models("diffusion_models") / "flux1-dev-fp8.safetensors",
          flux_state_dict(flux_params(), dtype=torch.float8_e4m3fn))
    write(models("loras") / "flux1-depth-dev-lora.safetensors", control_lora(flux_params()))
    write(models("text_encoders") / "clip_l.safetensors", clip_l_state_dict())
    write(models("text_encoders") / "t5xxl_fp16.safetensors", t5_state_dict())
    write(models("vae") / "ae.safetensors", vae16_state_dict(dtype=torch.float16))
    place_lotus_depth_files(models)
    graph_server.input_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(graph_server.input_dir / "flux_depth_lora_example_input_image.png")
    converted = graph_server.server.post("/api/workflows/convert",
                                         json={"workflow": template("flux_depth_lora_example")}).json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    for node in prompt.values():
        if node["class_type"] in ("KSampler", "BasicScheduler"):
            node["inputs"]["steps"] = 2
        if node["class_type"] == "ImageScaleToTotalPixels":
            node["inputs"]["megapixels"] = 0.01
    assert {"LoraLoaderModelOnly", "InstructPixToPixConditioning"} <= {n["class_type"] for n in prompt.values()}
    outputs = graph_server.outputs(prompt)
    saved = [item for key, out in outputs.items() if prompt[key]["class_type"] == "SaveImage"
             for item in out.get("images", [])]
    images = [np.asarray(Image.open(graph_server.output_dir / i["subfolder"] / i["filename"])) for i in saved]
    assert len(images) == 1 and images[0].ndim == 3 and images[0].std() > 0
