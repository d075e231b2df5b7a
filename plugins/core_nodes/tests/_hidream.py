"""Random-weight HiDream files in ComfyUI's key layout, and diffusers / transformers as the oracles.

The transformer is reduced (2 heads of 128, 2 double- and 2 single-stream
blocks, 4 experts) with 256-wide T5 and Llama states: the family's detection
reads all of it from the keys. Llama 3.1 keeps its vocabulary (the detector
checks it) at width 256 and 3 layers; T5 is the small test T5 of _flux.py.
"""

from __future__ import annotations

import torch
from _random_weights import module_shapes, random_state_dict

WIDTH = 256  # T5 and Llama state width of the test files


def transformer_layout(**overrides):
    from comfy_kernel_core_nodes.families.hidream.transformer import HiDreamConfig, full_llama_layers

    base = dict(num_layers=2, num_single_layers=2, num_attention_heads=2, t5_channels=WIDTH, llama_channels=WIDTH,
                llama_layers=full_llama_layers(4))
    base.update(overrides)
    return HiDreamConfig(**base)


def transformer_state_dict(layout=None, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.families.hidream.transformer import HiDreamTransformer

    with torch.device("meta"):
        net = HiDreamTransformer(layout or transformer_layout())
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def llama_config(layers: int = 3):
    from dataclasses import replace

    from comfy_kernel_core_nodes.components.llm.decoder import LLAMA31_8B

    return replace(LLAMA31_8B, hidden_size=WIDTH, intermediate_size=512, num_layers=layers, num_heads=2,
                   num_kv_heads=1)


def llama_state_dict(layers: int = 3, seed: int = 5, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM

    with torch.device("meta"):
        net = DecoderLM(llama_config(layers))
    return random_state_dict(module_shapes(net), seed=seed, dtype=dtype)


def diffusers_transformer(layout, sd: dict[str, torch.Tensor]):
    """diffusers' HiDreamImageTransformer2DModel with the same configuration and weights."""
    from diffusers import HiDreamImageTransformer2DModel

    model = HiDreamImageTransformer2DModel(
        patch_size=layout.patch_size, in_channels=layout.in_channels, out_channels=layout.out_channels,
        num_layers=layout.num_layers, num_single_layers=layout.num_single_layers,
        attention_head_dim=layout.attention_head_dim, num_attention_heads=layout.num_attention_heads,
        caption_channels=[layout.t5_channels, layout.llama_channels], text_emb_dim=layout.text_emb_dim,
        num_routed_experts=layout.num_routed_experts, num_activated_experts=layout.num_activated_experts,
        axes_dims_rope=tuple(layout.axes_dims_rope), llama_layers=list(layout.llama_layers))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    return model.eval()
