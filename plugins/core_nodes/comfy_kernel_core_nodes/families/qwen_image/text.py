"""Qwen-Image's text encoder: Qwen2.5-VL 7B (language model and vision tower) behind a chat template.

The prompt is wrapped in a system prompt that asks for an image description
(or, with input images, for an edit instruction with the images inline as
``<|vision_start|><|image_pad|><|vision_end|>``); the conditioning is the
final normed hidden state from the user's turn on, the template's system part
cut off as ComfyUI does. The vision tower runs when images are given
(TextEncodeQwenImageEdit / ...Plus). Model keys are ComfyUI's
(``qwen25_7b.transformer.model.layers.N...``, ``...visual.blocks.N...``).
The same CLIP generates text (TextGenerate) after the same template, an
input image seen through the vision tower with its multimodal positions.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ...components.llm.decoder import QWEN25_7B, DecoderLM, LLMConfig
from ...components.llm.encoder import ChatTokenizer, embed_prompt, mrope_positions
from ...components.llm.generate import Sampling, reply
from ...components.llm.qwen_vision import QWEN25_VL_VISION, VisionConfig, VisionTransformer
from ...components.llm.tokenizer import IM_START
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from .detect import count, qwen25_7b_prefix

TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
            "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
TEMPLATE_IMAGES = ("<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, "
                   "objects, background), then explain how the user's text instruction should alter or modify the "
                   "image. Generate a new image that meets the user's requirements while maintaining consistency "
                   "with the original input where appropriate.<|im_end|>\n<|im_start|>user\n"
                   "<|vision_start|><|image_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n")
KEY = "qwen25_7b"
MODEL_KEY_PREFIX = "qwen25_7b.transformer."
USER, NEWLINE = 872, 198


class QwenImageTokenizer(ChatTokenizer):
    def __init__(self, embedding_directory: Any = None, tokenizer_data: dict | None = None) -> None:
        super().__init__(KEY, TEMPLATE)

    def apply_template(self, text: str, llama_template: str | None = None, images: Any = ()) -> str:
        if text.startswith("<|im_start|>") or text.startswith("<|start_header_id|>"):
            return text
        if llama_template is not None:
            return llama_template.format(text)
        return (TEMPLATE_IMAGES if images else TEMPLATE).format(text)


class QwenVLEncoder(nn.Module):
    """Qwen2.5-VL as ComfyUI's files hold it: ``model.*`` (the LLM) and ``visual.*`` (the vision tower)."""

    def __init__(self, config: LLMConfig, vision: VisionConfig | None, ops: Any,
                 compute_dtype: torch.dtype | None) -> None:
        super().__init__()
        llm = DecoderLM(config, ops, compute_dtype)
        self.model = llm.model
        self._llm = [llm]  # the decoder's forward, sharing this module's layers
        self.visual = VisionTransformer(vision, ops) if vision is not None else None

    @property
    def llm(self) -> DecoderLM:
        return self._llm[0]


def template_end(tokens: list[tuple]) -> int:
    """Where the conditioning starts: the user's turn (after "<|im_start|>user\\n")."""
    end, seen = -1, 0
    for i, pair in enumerate(tokens):
        if isinstance(pair[0], int) and pair[0] == IM_START and seen < 2:
            end, seen = i, seen + 1
    if len(tokens) > end + 3 and tokens[end + 1][0] == USER and tokens[end + 2][0] == NEWLINE:
        end += 3
    return end


def encode_qwen_image(module: QwenVLEncoder, tokens: dict[str, Any], options: dict[str, Any]) -> tuple:
    pairs = tokens[KEY][0]
    with torch.no_grad():
        embeds, images = embed_prompt(module.llm, pairs, module.visual)
        positions = mrope_positions(images, embeds.shape[1], embeds.device)
        if positions is not None:
            positions = positions[:, None, :]
        mask = torch.ones(1, embeds.shape[1], dtype=torch.long, device=embeds.device)
        out, _ = module.llm(embeds, attention_mask=mask, positions=positions)
    start = template_end(pairs)
    out = out[:, start:].float()
    mask = mask[:, start:]
    extra = {} if int(mask.sum()) == mask.numel() else {"attention_mask": mask}
    return out, None, extra


def generate_qwen25_vl(module: QwenVLEncoder, tokens: dict[str, Any], max_new_tokens: int, sampling: Sampling,
                       **callbacks: Any) -> list[int]:
    """Qwen2.5-VL's reply to the templated prompt (images through the vision tower)."""
    return reply(module.llm, tokens[KEY][0], max_new_tokens, sampling, module.visual, **callbacks)


def _configs(shapes: Shapes, prefix: str) -> tuple[LLMConfig, VisionConfig | None]:
    layers = count(shapes, re.escape(prefix) + r"model\.layers\.(\d+)\.")
    config = replace(QWEN25_7B, num_layers=layers)
    vision = None
    if prefix + "visual.patch_embed.proj.weight" in shapes:
        depth = count(shapes, re.escape(prefix) + r"visual\.blocks\.(\d+)\.")
        vision = replace(QWEN25_VL_VISION, num_layers=depth)
    return config, vision


def qwen_image_clip(path: str, prefix: str, shapes: Shapes) -> CLIP:
    config, vision = _configs(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith(("model.", "visual.")) or key in ("scaled_fp8",) else None

    weights = network_weights(path, prefix, shapes, "Qwen2.5-VL text encoder", "text_encoder",
                              lambda ops, compute: QwenVLEncoder(config, vision, ops, compute), rename=rename)
    encoder = TextEncoderModel(weights, MODEL_KEY_PREFIX, encode_qwen_image, "qwen_image_clip", generate_qwen25_vl)
    return CLIP(tokenizer=QwenImageTokenizer(), cond_stage_model=encoder)


def load_qwen_image_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """CLIPLoader type ``qwen_image``: one Qwen2.5-VL 7B file (bf16, fp8 or scaled fp8)."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    if len(paths) != 1:
        raise UnsupportedModel("CLIP type 'qwen_image' takes one text encoder file (Qwen2.5-VL 7B)")
    shapes = tensor_shapes(paths[0])
    prefix = qwen25_7b_prefix(shapes)
    if prefix is None:
        raise UnsupportedModel(f"{os.path.basename(paths[0])}: no Qwen2.5-VL 7B text encoder recognised in this "
                               "file (CLIP type 'qwen_image' needs one)")
    return qwen_image_clip(paths[0], prefix, shapes)
