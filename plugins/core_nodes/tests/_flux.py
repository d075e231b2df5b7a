"""Random-weight Flux-family files in the original key layout, and diffusers as the forward-pass oracle.

The transformers are reduced in width (2 heads of 128 channels) and depth:
the family's detection reads both from the keys. The text encoders are a
full-size CLIP-L (its detection checks the real width and depth) and a small
T5 (4 heads, 2 layers: T5's layout is read from the keys too); the VAE is the
real 16-channel autoencoder.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from _random_weights import module_shapes, random_state_dict, write

HIDDEN = 256
T5_WIDTH = 256


def flux_params(**overrides: Any):
    from comfy_kernel_core_nodes.families.flux.model import FluxParams

    base = dict(in_channels=64, out_channels=64, vec_in_dim=768, context_in_dim=T5_WIDTH, hidden_size=HIDDEN,
                num_heads=HIDDEN // 128, depth=2, depth_single_blocks=2, guidance_embed=True)
    base.update(overrides)
    return FluxParams(**base)


def flux_state_dict(params, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.flux.model import Flux

    with torch.device("meta"):
        net = Flux(params)
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def t5_state_dict(seed: int = 1, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder

    with torch.device("meta"):
        net = T5Encoder(T5Config(width=T5_WIDTH, ff_width=512, heads=4, layers=2))
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def clip_l_state_dict(seed: int = 2, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.components.clip.text_model import CLIPTextModel

    with torch.device("meta"):
        net = CLIPTextModel()
    sd = random_state_dict(module_shapes(net), seed=seed, dtype=dtype)
    sd["embeddings.position_ids"] = torch.arange(77)[None]
    return sd


def vae16_state_dict(seed: int = 3, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.components.kl_vae import AutoencoderKL

    with torch.device("meta"):
        net = AutoencoderKL(latent_channels=16, use_quant_conv=False)
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def prefixed(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def write_flux_files(folder: Path, params=None, seed: int = 0) -> dict[str, Path]:
    """diffusion model, CLIP-L, T5 and VAE files under ComfyUI's folder names."""
    params = params or flux_params()
    return {
        "unet": write(folder / "diffusion_models" / "flux-tiny.safetensors", flux_state_dict(params, seed)),
        "clip_l": write(folder / "text_encoders" / "clip_l.safetensors", clip_l_state_dict()),
        "t5": write(folder / "text_encoders" / "t5xxl_tiny.safetensors", t5_state_dict()),
        "vae": write(folder / "vae" / "ae.safetensors", vae16_state_dict()),
    }


def diffusers_converter(name: str, hidden: int = HIDDEN):
    """diffusers' single-file key converter ``name`` with its hard-coded 3072 width replaced by ``hidden``."""
    from diffusers.loaders import single_file_utils

    source = inspect.getsource(getattr(single_file_utils, name)).replace("inner_dim = 3072", f"inner_dim = {hidden}")
    namespace = dict(vars(single_file_utils))
    exec(compile(source, f"<diffusers {name}>", "exec"), namespace)
    return namespace[name]


def rel_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


CHROMA_EXTRA = {"in_dim": 64, "out_dim": HIDDEN, "hidden_dim": 128, "n_layers": 2}


def chroma_state_dict(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.flux.chroma import Chroma

    with torch.device("meta"):
        net = Chroma(flux_params(guidance_embed=False, extra=CHROMA_EXTRA))
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def flux2_params(**overrides: Any):
    base = dict(in_channels=128, out_channels=128, context_in_dim=384, hidden_size=HIDDEN, mlp_ratio=3.0,
                num_heads=HIDDEN // 128, depth=2, depth_single_blocks=2, axes_dim=(32, 32, 32, 32), theta=2000,
                patch_size=1, qkv_bias=False, guidance_embed=True)
    base.update(overrides)
    return flux_params(**base)


def flux2_state_dict(params, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.flux.flux2 import Flux2

    with torch.device("meta"):
        net = Flux2(params)
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def flux2_vae_state_dict(seed: int = 4, dtype: torch.dtype = torch.float32,
                         decoder_widths: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.flux.flux2_vae import Flux2Autoencoder

    with torch.device("meta"):
        net = Flux2Autoencoder(decoder_widths)
    sd = random_state_dict(module_shapes(net), seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    sd["bn.running_mean"] = 0.1 * torch.randn(128, generator=g)
    sd["bn.running_var"] = 0.5 + torch.rand(128, generator=g)
    return sd


def klein_encoder_config(layers: int = 28):
    """Qwen3 at a reduced width with the vocabulary and the 28 layers Klein reads (9, 18, 27)."""
    from comfy_kernel_core_nodes.components.llm.decoder import LLMConfig

    return LLMConfig(vocab_size=151936, hidden_size=64, intermediate_size=128, num_layers=layers, num_heads=2,
                     num_kv_heads=1, head_dim=32, qk_norm=True)


def klein_encoder_state_dict(seed: int = 5, dtype: torch.dtype = torch.float32,
                             layers: int = 28) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM

    with torch.device("meta"):
        net = DecoderLM(klein_encoder_config(layers))
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def scaled_fp8(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the file's tensors in scaled fp8, the weights they stand for) of a float state dict."""
    fp8 = torch.float8_e4m3fn
    stored, dequantized = {"scaled_fp8": torch.empty(0, dtype=fp8)}, {}
    for key, value in sd.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max().float() / 448.0
            q = (value.float() / scale).to(fp8)
            stored[key], stored[key[: -len("weight")] + "scale_weight"] = q, scale.reshape(())
            dequantized[key] = q.float() * scale
        else:
            stored[key] = dequantized[key] = value
    return stored, dequantized


def fp8_mixed(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """ComfyUI's "fp8mixed" layout of a float state dict: the block matrices in fp8 with a ``weight_scale``,
    a ``comfy_quant`` entry and an ``input_scale``, everything else bf16; and the weights they stand for."""
    import json

    fp8 = torch.float8_e4m3fn
    quant = list(json.dumps({"format": "float8_e4m3fn"}).encode())
    stored, dequantized = {}, {}
    for key, value in sd.items():
        value = value.float()
        layer = key[: -len(".weight")]
        if "blocks." in key and key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max() / 448.0
            q = (value / scale).to(fp8)
            stored.update({key: q, layer + ".weight_scale": scale.reshape(()),
                           layer + ".comfy_quant": torch.tensor(quant, dtype=torch.uint8),
                           layer + ".input_scale": torch.tensor(1.0)})
            dequantized[key] = q.float() * scale
        else:
            stored[key] = value.to(torch.bfloat16)
            dequantized[key] = stored[key].float()
    return stored, dequantized


TEKKEN_SPECIAL = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"] + [f"<SPECIAL_{i}>" for i in range(5, 17)] + [
    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
TEKKEN_MERGES = [b"th", b"the", b" the", b"re", b"ed", b" r", b" red", b"fo", b"fox", b" fox", b"ox"]


def tekken_json(num_special: int = 100) -> bytes:
    """A small tekken vocabulary: the 256 bytes (rank = byte), then ``TEKKEN_MERGES`` in rank order."""
    import base64
    import json

    tokens = [bytes([b]) for b in range(256)] + TEKKEN_MERGES
    vocab = [{"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": None} for i, t in enumerate(tokens)]
    special = [{"rank": i, "token_str": name, "is_control": True} for i, name in enumerate(TEKKEN_SPECIAL)]
    config = {"pattern": "", "num_vocab_tokens": len(tokens), "default_vocab_size": num_special + len(tokens),
              "default_num_special_tokens": num_special, "version": "v7"}
    return json.dumps({"config": config, "vocab": vocab, "special_tokens": special}).encode()


def mistral_encoder_config(layers: int = 31):
    from comfy_kernel_core_nodes.components.llm.decoder import LLMConfig

    return LLMConfig(vocab_size=100 + 256 + len(TEKKEN_MERGES), hidden_size=64, intermediate_size=128,
                     num_layers=layers, num_heads=2, num_kv_heads=1, head_dim=128, rms_norm_eps=1e-5, rope_theta=1e9)


def mistral_encoder_state_dict(seed: int = 8, dtype: torch.dtype = torch.float16,
                               layers: int = 31) -> dict[str, torch.Tensor]:
    """Mistral Small 3's layout at a reduced width, with the 31 layers Flux.2 reads and its tekken tensor."""
    from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM

    with torch.device("meta"):
        net = DecoderLM(mistral_encoder_config(layers))
    sd = random_state_dict(module_shapes(net), seed=seed, dtype=dtype)
    sd["tekken_model"] = torch.frombuffer(bytearray(tekken_json()), dtype=torch.uint8)
    return sd
