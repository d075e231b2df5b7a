"""Prompts through an LLM text encoder, as ComfyUI's LLM-based encoders tokenize and run them.

The prompt is wrapped in the family's chat template and tokenized whole
(ComfyUI's weight syntax is off for these encoders: ``(word:1.2)`` stays
text); the text only splits where ``embedding:`` follows a space or newline,
as in ComfyUI. Tokens are ``(id, 1.0)`` pairs; an ``<|image_pad|>`` token can
carry an image instead of an id (``{"type": "image", "data": IMAGE}``), which
the vision tower turns into as many embeddings as the image has merged patches.

For text generation (TextGenerate) the same tokenizers take ComfyUI's
generation options: ``skip_template`` (the prompt as it is),
``system_prompt`` (replaces the template's system turn, or opens one),
``thinking`` (Qwen3 only: False closes an empty ``<think>`` block after the
assistant's turn opens, as Qwen3's own chat template does with thinking
off; True leaves the model to open it), ``min_length`` (no padding for a
reply) and ``image`` (one IMAGE for the templates with an image slot).
Qwen3 tokenizers decode Qwen3's own added tokens (``<think>`` ...) by their
names; the shared Qwen2.5 vocabulary, ComfyUI's, names those ids otherwise.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from .tokenizer import IMAGE_PAD, PAD_TOKEN, qwen_tokenizer

EMBEDDING_IDENTIFIER = "embedding:"
SYSTEM_TURN = re.compile(r"^<\|im_start\|>system\n.*?<\|im_end\|>\n", re.DOTALL)
EMPTY_THINKING = "<think>\n\n</think>\n\n"
#: ids Qwen3 gives its own added tokens
QWEN3_ADDED = {151665: "<tool_response>", 151666: "</tool_response>", 151667: "<think>", 151668: "</think>"}


def split_pieces(text: str) -> list[str]:
    """The pieces ComfyUI tokenizes separately: the text cut before each " embedding:" / "\\nembedding:"."""
    parts = re.split(f" {EMBEDDING_IDENTIFIER}|\n{EMBEDDING_IDENTIFIER}", text)
    return [p for p in [parts[0]] + [EMBEDDING_IDENTIFIER + p for p in parts[1:]] if p]


class ChatTokenizer:
    """``tokenize_with_weights(text)`` -> ``{key: [[(token, 1.0), ...]]}`` for one LLM encoder."""

    #: whether the model is a Qwen3, with its thinking switch and added tokens (see the module's docstring)
    qwen3 = False

    def __init__(self, key: str, template: str | None, min_length: int = 1, pad_token: int = PAD_TOKEN) -> None:
        self.key = key
        self.template = template
        self.min_length = min_length
        self.pad_token = pad_token

    def apply_template(self, text: str, llama_template: str | None = None, images: Any = ()) -> str:
        template = llama_template or self.template
        return template.format(text) if template else text

    def generation_text(self, text: str, llama_template: str | None, images: list, options: dict[str, Any]) -> str:
        """The templated prompt with TextGenerate's options (``system_prompt``, ``thinking``, ``skip_template``)."""
        if options.get("skip_template"):
            return text
        text = self.apply_template(text, llama_template, images)
        system = options.get("system_prompt") or ""
        if system:
            turn = f"<|im_start|>system\n{system}<|im_end|>\n"
            text = SYSTEM_TURN.sub(lambda _: turn, text, count=1) if SYSTEM_TURN.match(text) else turn + text
        if self.qwen3 and options.get("thinking") is not None:
            text = text.removesuffix(EMPTY_THINKING) + ("" if options["thinking"] else EMPTY_THINKING)
        return text

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, llama_template: str | None = None,
                              images: Any = (), **kwargs: Any) -> dict[str, Any]:
        images = list(images or ())
        if kwargs.get("image") is not None and not images:
            images = [kwargs["image"]]
        text = self.generation_text(text, llama_template, images, kwargs)
        tokenizer = qwen_tokenizer()
        tokens: list[Any] = []
        for piece in split_pieces(text):
            tokens.extend(tokenizer.encode(piece))
        min_length = kwargs.get("tokenizer_options", {}).get(f"{self.key}_min_length", self.min_length)
        min_length = kwargs.get("min_length", min_length)
        tokens += [self.pad_token] * max(0, (min_length or 0) - len(tokens))
        pairs: list[tuple] = [(t, 1.0) for t in tokens]
        for i, (t, _) in enumerate(pairs):
            if t == IMAGE_PAD and images:
                pairs[i] = ({"type": "image", "data": images.pop(0), "original_type": "image"}, 1.0)
        if return_word_ids:
            pairs = [(t, w, 1) for t, w in pairs]
        return {self.key: [pairs]}

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of generated ids (``<|im_end|>`` and the other special tokens left out by default)."""
        tokenizer = qwen_tokenizer()
        if not self.qwen3:
            return tokenizer.decode([int(t) for t in token_ids], skip_special_tokens=skip_special_tokens)
        parts: list[str] = []
        run: list[int] = []
        for token in (int(t) for t in token_ids):
            if token in QWEN3_ADDED:
                parts += [tokenizer.decode(run, skip_special_tokens=skip_special_tokens), QWEN3_ADDED[token]]
                run = []
            else:
                run.append(token)
        return "".join(parts + [tokenizer.decode(run, skip_special_tokens=skip_special_tokens)])

    def untokenize(self, token_weight_pair: list) -> list:
        tokenizer = qwen_tokenizer()
        return [(p, tokenizer.decode([p[0]]) if isinstance(p[0], int) else "<image>") for p in token_weight_pair]

    def state_dict(self) -> dict:
        return {}


def mrope_positions(images: list[tuple[int, int, torch.Tensor]], length: int, device: torch.device
                    ) -> torch.Tensor | None:
    """[3, L] positions when the sequence holds images (start, size, grid [[1, h, w]]), else None.

    Text runs 0, 1, 2 ...; an image's tokens share its first position in time
    and count rows and columns of merged patches from there; text after an
    image continues after its largest side (ComfyUI's rule).
    """
    if not images:
        return None
    pos = torch.zeros(3, length, device=device)
    offset = 0
    for n, (start, size, grid) in enumerate(images):
        if n == 0:
            pos[:, :start] = torch.arange(start, device=device)
        end = start + size
        longest = int(grid.max()) // 2
        resume = longest + start
        pos[:, end:] = torch.arange(resume + offset, resume + (length - end) + offset, device=device)
        pos[0, start:end] = start + offset
        rows, cols = int(grid[0][1]) // 2, int(grid[0][2]) // 2
        pos[1, start:end] = torch.arange(start + offset, start + rows + offset, device=device) \
            .unsqueeze(1).repeat(1, math.ceil(size / rows)).flatten()[:size]
        pos[2, start:end] = torch.arange(start + offset, start + cols + offset, device=device) \
            .unsqueeze(0).repeat(math.ceil(size / cols), 1).flatten()[:size]
        offset += longest - size
    return pos


def embed_prompt(llm: Any, tokens: list[tuple], vision: Any = None
                 ) -> tuple[torch.Tensor, list[tuple[int, int, torch.Tensor]]]:
    """Embeddings [1, L, D] of one token list (images expanded) and where the images are."""
    from .qwen_vision import image_patches

    device = next(llm.parameters()).device
    parts: list[torch.Tensor] = []
    images: list[tuple[int, int, torch.Tensor]] = []
    run: list[int] = []
    length = 0

    def flush() -> None:
        nonlocal length
        if run:
            parts.append(llm.embed(torch.tensor([run], device=device)))
            length += len(run)
            run.clear()

    for pair in tokens:
        token = pair[0]
        if isinstance(token, int):
            run.append(token)
            continue
        flush()
        if isinstance(token, dict) and token.get("type") == "image" and vision is not None:
            patches, grid = image_patches(token["data"], vision.config)
            features = vision(patches.to(device=device, dtype=vision_dtype(vision)), grid)
            images.append((length, features.shape[0], grid))
            parts.append(features[None].to(llm.dtype))
            length += features.shape[0]
        elif isinstance(token, torch.Tensor):
            parts.append(token.reshape(1, -1, token.shape[-1]).to(device=device, dtype=llm.dtype))
            length += parts[-1].shape[1]
        else:  # an image without a vision tower: the placeholder token itself
            run.append(IMAGE_PAD)
    flush()
    return torch.cat(parts, dim=1), images


def vision_dtype(vision: Any) -> torch.dtype:
    """The dtype the vision tower computes in (fp32 inputs on the CPU)."""
    weight = vision.patch_embed.proj.weight
    compute = getattr(vision.patch_embed.proj, "compute_dtype", None)
    return compute or weight.dtype
