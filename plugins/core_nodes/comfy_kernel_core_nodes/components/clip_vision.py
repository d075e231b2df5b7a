"""CLIP's image encoder (ViT-L/14, ViT-H/14, ViT-bigG/14) with its projection, SigLIP's (so400m/14 at 384,
HunyuanVideo 1.5's), and CLIP's image preprocessing.

Module names follow the Hugging Face layout ComfyUI uses for CLIP_VISION
(``vision_model.embeddings.patch_embedding``, ``vision_model.pre_layrnorm`` —
sic —, ``vision_model.encoder.layers.N``, ``vision_model.post_layernorm``,
``visual_projection``); files in OpenCLIP's layout (``visual.transformer
.resblocks.N.attn.in_proj_weight`` ...) are converted on read
(:func:`openclip_to_hf`). Weights may be stored in fp16: every layer casts
them to the activations' dtype, so the encoder computes in float32.

SigLIP differs in what ComfyUI runs of it: no class token (a biased patch
convolution), no norm before the encoder, tanh-approximated GELU, the final
norm over every token (that is its last hidden state and its "image
embeds"), no projection; pixels are normalised with mean and std 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model.attention import optimized_attention
from ..model.ops import CastConv2d, CastEmbedding, CastLayerNorm, CastLinear
from .clip.text_model import CLIPMLP

#: CLIP's normalisation constants (ComfyUI's defaults for every CLIP vision config).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VisionConfig:
    name: str
    width: int
    layers: int
    heads: int
    mlp_width: int
    activation: str
    projection_dim: int
    patch_size: int = 14
    image_size: int = 224
    eps: float = 1e-5
    siglip: bool = False


VIT_L = VisionConfig("vit_l", 1024, 24, 16, 4096, "quick_gelu", 768)
VIT_L_336 = VisionConfig("vit_l_336", 1024, 24, 16, 4096, "quick_gelu", 768, image_size=336)
VIT_H = VisionConfig("vit_h", 1280, 32, 16, 5120, "gelu", 1024)
VIT_G = VisionConfig("vit_bigg", 1664, 48, 16, 8192, "gelu", 1280)
SIGLIP_384 = VisionConfig("siglip_384", 1152, 27, 16, 4304, "gelu_tanh", 0, image_size=384, eps=1e-6, siglip=True)


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> VisionConfig | None:
    """Which ViT a Hugging Face-layout state dict holds (as ComfyUI decides: by layer count and positions)."""
    if "vision_model.encoder.layers.47.layer_norm1.weight" in shapes:
        return VIT_G
    if "vision_model.encoder.layers.30.layer_norm1.weight" in shapes:
        return VIT_H
    if "vision_model.encoder.layers.26.layer_norm1.weight" in shapes \
            and shapes["vision_model.encoder.layers.0.layer_norm1.weight"][0] == 1152 \
            and shapes.get("vision_model.embeddings.position_embedding.weight", (0,))[0] == 729:
        return SIGLIP_384
    if "vision_model.encoder.layers.22.layer_norm1.weight" in shapes:
        if shapes["vision_model.encoder.layers.0.layer_norm1.weight"][0] != 1024:
            return None
        positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
        if positions == 577 and "multi_modal_projector.linear_1.bias" not in shapes:
            return VIT_L_336
        if positions == 257:
            return VIT_L
    return None


class _Attention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = CastLinear(cfg.width, cfg.width)
        self.k_proj = CastLinear(cfg.width, cfg.width)
        self.v_proj = CastLinear(cfg.width, cfg.width)
        self.out_proj = CastLinear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads))


class _Layer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = CastLayerNorm(cfg.width, eps=cfg.eps)
        self.self_attn = _Attention(cfg)
        self.layer_norm2 = CastLayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = CLIPMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.layers))


class _Embeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if not cfg.siglip:
            self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.patch_embedding = CastConv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=cfg.siglip)
        tokens = (cfg.image_size // cfg.patch_size) ** 2 + (0 if cfg.siglip else 1)
        self.position_embedding = CastEmbedding(tokens, cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        if hasattr(self, "class_embedding"):
            cls = self.class_embedding.to(device=x.device, dtype=x.dtype).expand(pixels.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        return x + self.position_embedding.weight.to(device=x.device, dtype=x.dtype)


class _VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        if not cfg.siglip:
            self.pre_layrnorm = CastLayerNorm(cfg.width, eps=cfg.eps)
        self.encoder = _Encoder(cfg)
        self.post_layernorm = CastLayerNorm(cfg.width, eps=cfg.eps)


class CLIPVisionModel(nn.Module):
    """``forward(pixels) -> (last_hidden_state, penultimate_hidden_states, image_embeds)``."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_model = _VisionTransformer(cfg)
        if cfg.projection_dim:
            self.visual_projection = CastLinear(cfg.width, cfg.projection_dim, bias=False)

    def forward(self, pixels: torch.Tensor, intermediate: int | str = -2
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``intermediate="all"``: the second output is every layer's output, stacked [B, layers, tokens, width]."""
        vm = self.vision_model
        x = vm.embeddings(pixels)
        if hasattr(vm, "pre_layrnorm"):
            x = vm.pre_layrnorm(x)
        every = intermediate == "all"
        pick = -1 if every else len(vm.encoder.layers) + intermediate if intermediate < 0 else intermediate
        hidden = None
        outputs = []
        for i, layer in enumerate(vm.encoder.layers):
            x = layer(x)
            if i == pick:
                hidden = x.clone()
            if every:
                outputs.append(x)
        if every:
            hidden = torch.stack(outputs, dim=1)
        if self.cfg.siglip:
            x = vm.post_layernorm(x)
            return x, hidden, x
        pooled = vm.post_layernorm(x[:, 0, :])
        return x, hidden, self.visual_projection(pooled)


def preprocess(image: torch.Tensor, size: int = 224, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD,
               crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> normalised pixels [B, 3, size, size], as ComfyUI prepares them.

    ``crop``: scale the short side to ``size`` (bicubic, antialiased) and cut the
    centre; otherwise stretch to size x size. Values are quantised to 8 bits
    before normalising, as the encoder saw them in training.
    """
    image = image[:, :, :, :3] if image.shape[3] > 3 else image
    mean_t = torch.tensor(mean, device=image.device, dtype=image.dtype)
    std_t = torch.tensor(std, device=image.device, dtype=image.dtype)
    image = image.movedim(-1, 1)
    if not (image.shape[2] == size and image.shape[3] == size):
        if crop:
            scale = size / min(image.shape[2], image.shape[3])
            scaled = (round(scale * image.shape[2]), round(scale * image.shape[3]))
        else:
            scaled = (size, size)
        image = F.interpolate(image, size=scaled, mode="bicubic", antialias=True)
        top, left = (image.shape[2] - size) // 2, (image.shape[3] - size) // 2
        image = image[:, :, top:top + size, left:left + size]
    image = torch.clip(255.0 * image, 0, 255).round() / 255.0
    return (image - mean_t.view([3, 1, 1])) / std_t.view([3, 1, 1])


_OPENCLIP = {"class_embedding": "vision_model.embeddings.class_embedding",
             "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
             "positional_embedding": "vision_model.embeddings.position_embedding.weight",
             "ln_post.weight": "vision_model.post_layernorm.weight", "ln_post.bias": "vision_model.post_layernorm.bias",
             "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias"}
_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
          "attn.out_proj": "self_attn.out_proj"}


def openclip_hf_names(key: str) -> list[str]:
    """The Hugging Face name(s) of one OpenCLIP visual-tower key (prefix removed); [] drops it."""
    if key in _OPENCLIP:
        return [_OPENCLIP[key]]
    if key == "proj":
        return ["visual_projection.weight"]
    if key.startswith("transformer.resblocks."):
        index, rest = key[len("transformer.resblocks."):].split(".", 1)
        layer = f"vision_model.encoder.layers.{index}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            return [f"{layer}self_attn.{p}.{kind}" for p in ("q_proj", "k_proj", "v_proj")]
        for old, new in _BLOCK.items():
            if rest.startswith(old + "."):
                return [layer + new + rest[len(old):]]
    return []


def openclip_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenCLIP visual tower (prefix removed) in Hugging Face names: q/k/v split, projection transposed."""
    out = {}
    for key, tensor in sd.items():
        names = openclip_hf_names(key)
        if key == "proj":
            out[names[0]] = tensor.transpose(0, 1).contiguous()
        elif len(names) == 3:
            for name, part in zip(names, tensor.chunk(3, dim=0), strict=True):
                out[name] = part.contiguous()
        elif names:
            out[names[0]] = tensor
    return out


def openclip_shapes(shapes: dict[str, tuple[int, ...]], prefix: str) -> dict[str, tuple[int, ...]]:
    """The Hugging Face key -> shape table of an OpenCLIP visual tower under ``prefix``."""
    out = {}
    for key, shape in shapes.items():
        if not key.startswith(prefix):
            continue
        local = key[len(prefix):]
        names = openclip_hf_names(local)
        if local == "proj":
            out[names[0]] = (shape[1], shape[0])
        elif len(names) == 3:
            for name in names:
                out[name] = (shape[0] // 3,) + tuple(shape[1:])
        elif names:
            out[names[0]] = tuple(shape)
    return out
