"""SD2.x: detection from the keys (UNet, OpenCLIP-H in its own layout), eps vs v-prediction, and a run.

The checkpoint is written by the test: a reduced SD2-layout UNet (context 1024,
linear projections, 64-wide heads), the full-depth OpenCLIP-H text tower under
``cond_stage_model.model.`` in OpenCLIP's names, and the SD VAE.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _random_weights import module_shapes, random_state_dict, write  # noqa: E402

from comfy_kernel_core_nodes.model.base import ModelType  # noqa: E402
from comfy_kernel_core_nodes.model.loading import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_torch_thread")

UNET_LAYOUT = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": (1, 2),
               "num_res_blocks": (1, 1), "transformer_depth": (1, 0), "transformer_depth_output": (1, 1, 0, 0),
               "transformer_depth_middle": 1, "context_dim": 1024, "use_linear_in_transformer": True,
               "adm_in_channels": None, "num_heads": -1, "num_head_channels": 64}


def _openclip_h_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"token_embedding.weight": (49408, 1024), "positional_embedding": (77, 1024),
              "ln_final.weight": (1024,), "ln_final.bias": (1024,), "text_projection": (1024, 1024),
              "logit_scale": ()}
    for i in range(24):
        p = f"transformer.resblocks.{i}."
        shapes.update({p + "ln_1.weight": (1024,), p + "ln_1.bias": (1024,), p + "ln_2.weight": (1024,),
                       p + "ln_2.bias": (1024,), p + "attn.in_proj_weight": (3072, 1024),
                       p + "attn.in_proj_bias": (3072,), p + "attn.out_proj.weight": (1024, 1024),
                       p + "attn.out_proj.bias": (1024,), p + "mlp.c_fc.weight": (4096, 1024),
                       p + "mlp.c_fc.bias": (4096,), p + "mlp.c_proj.weight": (1024, 4096),
                       p + "mlp.c_proj.bias": (1024,)})
    return shapes


def _checkpoint(tmp_path: Path, v_prediction: bool) -> Path:
    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL
    from comfy_kernel_core_nodes.families.sd.models import unet_layout
    from comfy_kernel_core_nodes.families.sd.unet import UNetModel

    with torch.device("meta"):
        unet, vae = UNetModel(unet_layout(UNET_LAYOUT)), AutoencoderKL()
    shapes = {**module_shapes(unet, "model.diffusion_model."), **module_shapes(vae, "first_stage_model.")}
    shapes.update({"cond_stage_model.model." + k: v for k, v in _openclip_h_shapes().items()})
    tensors = random_state_dict(shapes)
    tensors["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
    bias = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.norm1.bias"
    assert bias in tensors
    if v_prediction:  # the 768-v models' norm biases spread wider; ComfyUI reads output block 11's
        tensors["model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"] = \
            0.2 * torch.randn(320, generator=torch.Generator().manual_seed(3)).half()
    return write(tmp_path / f"sd2{'-v' if v_prediction else ''}.safetensors", tensors)


@pytest.mark.parametrize("v_prediction", [False, True])
def test_sd2_checkpoint_is_detected_and_samples(tmp_path, v_prediction):
    from comfy_kernel_core_nodes.sampling import sample as comfy_sample

    model, clip, vae = load_checkpoint(str(_checkpoint(tmp_path, v_prediction)))
    assert model.model.model_config.family == "sd2"
    assert model.model.model_type == (ModelType.V_PREDICTION if v_prediction else ModelType.EPS)
    assert "clip_h.transformer.text_model.encoder.layers.23.self_attn.q_proj.weight" in \
        clip.cond_stage_model.state_dict_keys()
    tokens = clip.tokenize("a photo of a cat")
    assert tokens["h"][0][6:8] == [(49407, 1.0), (0, 1.0)]  # end token, then padding with 0
    cond = clip.encode_from_tokens_scheduled(tokens)
    assert cond[0][0].shape == (1, 77, 1024) and torch.isfinite(cond[0][0]).all()
    latent = torch.zeros(1, 4, 8, 8)
    out = comfy_sample.sample(model, comfy_sample.prepare_noise(latent, 1), 2, 5.0, "euler", "normal", cond, cond,
                              latent, seed=1)
    assert out.shape == latent.shape and torch.isfinite(out).all()
    image = vae.decode(out)
    assert image.shape == (1, 64, 64, 3)
