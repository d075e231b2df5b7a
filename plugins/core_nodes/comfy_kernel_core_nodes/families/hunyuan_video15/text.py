"""HunyuanVideo 1.5's text encoders: Qwen2.5-VL 7B behind a video chat template, and byT5 for quoted text.

The prompt is wrapped in a system prompt that asks for a video description;
the conditioning is Qwen's hidden state after its third-to-last layer (not
normed), from the user's turn on (ComfyUI's cut). Text in double quotes (or
Chinese quotes) is also spelled out for the byT5 "glyph" encoder as
``Text "...". `` per quote; its final states go to the model as
``conditioning_byt5small``, which the transformer adds as its own tokens.
An empty prompt is encoded as a single space, as ComfyUI does for this
family. byT5 reads UTF-8 bytes (id = byte + 3, end token 1): no tokenizer
file is needed.

DualCLIPLoader type ``hunyuan_video_15`` takes the Qwen2.5-VL file and the
byT5 file in either order. Model keys are ComfyUI's
(``qwen25_7b.transformer.*``, ``byt5_small.transformer.*``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from ...components.llm.encoder import embed_prompt, mrope_positions
from ...components.t5 import T5Encoder, encode_t5, t5_config, t5_prefix, tokenize_t5
from ...model.base import WeightsSource
from ...model.clip import CLIP, TextEncoderModel
from ...model.detection import Shapes
from ...model.quant import network_weights
from ..qwen_image.detect import qwen25_7b_prefix
from ..qwen_image.text import QwenImageTokenizer, QwenVLEncoder, _configs, template_end

TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant. Describe the video by detailing the following "
            "aspects:\n1. The main content and theme of the video.\n2. The color, shape, size, texture, quantity, "
            "text, and spatial relationships of the objects.\n3. Actions, events, behaviors temporal "
            "relationships, physical movement changes of the objects.\n4. background environment, light, style "
            "and atmosphere.\n5. camera angles, movements, and transitions used in the video.<|im_end|>\n"
            "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
QWEN_PREFIX = "qwen25_7b.transformer."
BYT5_PREFIX = "byt5_small.transformer."
BYT5_WIDTH = 1472
#: the Qwen state used: after the third-to-last layer
HIDDEN_LAYER = -3
QUOTES = (r'"(.*?)"', r"‘(.*?)’", r"“(.*?)”")


class ByteTokenizer:
    """byT5's tokens: UTF-8 bytes shifted past pad (0), end (1) and unknown (2)."""

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("utf-8", errors="replace")


def quoted_text(text: str) -> str | None:
    """The byT5 prompt of the quoted parts of ``text`` (``Text "a". Text "b". ``), or None without quotes."""
    found = [m for pattern in QUOTES for m in re.findall(pattern, text)]
    return "".join(f'Text "{m}". ' for m in found) if found else None


class HunyuanVideo15Tokenizer(QwenImageTokenizer):
    """``{"qwen25_7b": [...], "byt5": [...]}`` (byT5 only when the prompt quotes text)."""

    def __init__(self, embedding_directory: Any = None, tokenizer_data: dict | None = None) -> None:
        super().__init__(embedding_directory, tokenizer_data)
        self.template = TEMPLATE

    def apply_template(self, text: str, llama_template: str | None = None, images: Any = ()) -> str:
        if text.startswith("<|im_start|>"):
            return text
        return (llama_template or TEMPLATE).format(text)

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, llama_template: str | None = None,
                              images: Any = (), **kwargs: Any) -> dict[str, Any]:
        out = super().tokenize_with_weights(text if text else " ", return_word_ids, llama_template, images,
                                            **kwargs)
        glyphs = quoted_text(text)
        if glyphs is not None:
            chunks = tokenize_t5(glyphs, min_length=1, width=BYT5_WIDTH, tokenizer=ByteTokenizer(),
                                 disable_weights=kwargs.get("disable_weights", False))
            if return_word_ids:
                chunks = [[(t, w, 0) for t, w in chunk] for chunk in chunks]
            out["byt5"] = chunks
        return out


class HunyuanVideo15TextEncoders(nn.Module):
    """``qwen25_7b.transformer`` (Qwen2.5-VL) and ``byt5_small.transformer`` (byT5, optional)."""

    def __init__(self, qwen: QwenVLEncoder, byt5: T5Encoder | None) -> None:
        super().__init__()
        self.qwen25_7b = nn.Module()
        self.qwen25_7b.transformer = qwen
        if byt5 is not None:
            self.byt5_small = nn.Module()
            self.byt5_small.transformer = byt5

    @property
    def dtype(self) -> torch.dtype:
        return self.qwen25_7b.transformer.llm.dtype


def _device(options: dict[str, Any]) -> Any:
    device = options.get("execution_device")
    return torch.device(device) if isinstance(device, str) else device


def encode_hunyuan_video15(module: HunyuanVideo15TextEncoders, tokens: dict[str, Any],
                           options: dict[str, Any]) -> tuple:
    qwen = module.qwen25_7b.transformer
    pairs = tokens["qwen25_7b"][0]
    with torch.no_grad():
        embeds, images = embed_prompt(qwen.llm, pairs, qwen.visual)
        positions = mrope_positions(images, embeds.shape[1], embeds.device)
        if positions is not None:
            positions = positions[:, None, :]
        mask = torch.ones(1, embeds.shape[1], dtype=torch.long, device=embeds.device)
        _, hidden = qwen.llm(embeds, attention_mask=mask, positions=positions, hidden_layer=HIDDEN_LAYER)
    start = template_end(pairs)
    cond = hidden[:, start:].float()
    mask = mask[:, start:]
    extra: dict[str, Any] = {} if int(mask.sum()) == mask.numel() else {"attention_mask": mask}
    if "byt5" in tokens and hasattr(module, "byt5_small"):
        byt5, _, _ = encode_t5(module.byt5_small.transformer, tokens["byt5"], attention_mask=True,
                               device=_device(options))
        extra["conditioning_byt5small"] = byt5
    return cond, None, extra


def byt5_prefix(shapes: Shapes) -> str | None:
    """Where a file keeps a byT5 encoder (a T5 over a vocabulary of a few hundred byte tokens), or None."""
    for prefix in ("", BYT5_PREFIX, "text_encoders." + BYT5_PREFIX):
        embed = shapes.get(prefix + "shared.weight")
        if embed is not None and embed[0] < 4096 and t5_prefix({k[len(prefix):]: v for k, v in shapes.items()
                                                                if k.startswith(prefix)}) == "":
            return prefix
    return None


def combined_source(qwen: WeightsSource, byt5: WeightsSource | None) -> WeightsSource:
    """One source for both networks, their keys under ComfyUI's model prefixes."""
    parts = [(qwen, QWEN_PREFIX)] + ([(byt5, BYT5_PREFIX)] if byt5 is not None else [])

    def read(device: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for source, prefix in parts:
            out.update({prefix + k: v for k, v in source.read(device).items()})
        return out

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

        return HunyuanVideo15TextEncoders(qwen.build(part(QWEN_PREFIX)),
                                          byt5.build(part(BYT5_PREFIX)) if byt5 is not None else None)

    keys = frozenset(prefix + k for source, prefix in parts for k in source.keys)
    size = sum(source.size or 0 for source, _ in parts) or None
    return WeightsSource(key="+".join(s.key for s, _ in parts), read=read, build=build, keys=keys, size=size,
                         dtype=qwen.dtype, compute=qwen.compute)


def qwen_source(path: str, prefix: str, shapes: Shapes) -> WeightsSource:
    config, vision = _configs(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith(("model.", "visual.")) or key == "scaled_fp8" else None

    return network_weights(path, prefix, shapes, "Qwen2.5-VL text encoder", "text_encoder",
                           lambda ops, compute: QwenVLEncoder(config, vision, ops, compute), rename=rename)


def byt5_source(path: str, prefix: str, shapes: Shapes) -> WeightsSource:
    cfg = t5_config(shapes, prefix)

    def rename(key: str) -> str | None:
        return key if key.startswith(("shared.", "encoder.")) or key == "scaled_fp8" else None

    return network_weights(path, prefix, shapes, "byT5 text encoder", "text_encoder",
                           lambda ops, compute: T5Encoder(cfg, ops), rename=rename)


def load_hunyuan_video15_clip(paths: list[str], embedding_directory: Any = None) -> CLIP:
    """DualCLIPLoader type ``hunyuan_video_15``: Qwen2.5-VL 7B and byT5 small (glyph), in either order."""
    from ...model.files import tensor_shapes
    from ...model.loading import UnsupportedModel

    qwen = byt5 = None
    for path in paths:
        shapes = tensor_shapes(path)
        if (prefix := qwen25_7b_prefix(shapes)) is not None and qwen is None:
            qwen = qwen_source(path, prefix, shapes)
        elif (prefix := byt5_prefix(shapes)) is not None and byt5 is None:
            byt5 = byt5_source(path, prefix, shapes)
        else:
            raise UnsupportedModel(f"{os.path.basename(path)}: neither Qwen2.5-VL 7B nor byT5 recognised in this "
                                   "file (CLIP type 'hunyuan_video_15' takes one of each)")
    if qwen is None:
        raise UnsupportedModel("CLIP type 'hunyuan_video_15' needs a Qwen2.5-VL 7B text encoder file")
    encoder = TextEncoderModel(combined_source(qwen, byt5), "", encode_hunyuan_video15, "hunyuan_video15_clip")
    return CLIP(tokenizer=HunyuanVideo15Tokenizer(embedding_directory), cond_stage_model=encoder)
