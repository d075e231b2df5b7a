"""CLIP: a text encoder (one or several) with its tokenizer, in ComfyUI's ``comfy.sd.CLIP`` shape.

``tokenize(text)`` gives ``{encoder name: [[(token, weight), ...], ...]}``
(``"l"`` for CLIP-L, ``"g"`` for OpenCLIP-G, ``"t5xxl"`` ...), and
``encode_from_tokens_scheduled(tokens)`` the CONDITIONING list. The weights
live in the model manager like every model's; ``clone()`` and ``add_patches``
give LoRA'd text encoders their own manager entry, as for MODEL.

Encodings are cached (the last 32, keyed by the encoder's weights and patches,
the layer, the tokens and the token options), so a prompt re-queued after the
executor cache was cleared does not run, or even load, the text encoder.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import torch

from .base import WeightsHolder, WeightsSource
from .patcher import ModelPatcher

_CACHE: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
_CACHE_SIZE = 32
_CACHE_LOCK = threading.Lock()


def clear_encode_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _tokens_fingerprint(tokens: Any) -> str:
    h = hashlib.blake2b(digest_size=16)

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            h.update(b"T")
            h.update(value.detach().float().cpu().numpy().tobytes())
        elif isinstance(value, dict):
            for k in sorted(value):
                h.update(repr(k).encode())
                feed(value[k])
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for v in value:
                feed(v)
            h.update(b"]")
        else:
            h.update(repr(value).encode())

    feed(tokens)
    return h.hexdigest()


class TextEncoderModel(WeightsHolder):
    """The encoder network behind a CLIP (ComfyUI's ``cond_stage_model``).

    ``encode(module, tokens, options) -> (cond, pooled[, extra])`` runs the
    family's encoding on the loaded network; ``options`` are the clip options
    (``layer``, ``projected_pooled``, ``execution_device``).
    """

    def __init__(self, weights: WeightsSource, key_prefix: str, encode: Any, name: str = "clip") -> None:
        self.weights = weights
        self.key_prefix = key_prefix
        self._encode = encode
        self.name = name
        self.options: dict[str, Any] = {}

    def bind(self, module: torch.nn.Module, object_patches: dict[str, Any] | None = None) -> TextEncoderModel:
        bound = super().bind(module, object_patches)
        bound.options = dict(self.options)
        return bound

    def set_clip_options(self, options: dict[str, Any]) -> None:
        self.options.update(options)

    def reset_clip_options(self) -> None:
        self.options = {}

    def memory_required(self, input_shape: Any = None) -> int:
        return 0

    def encode_token_weights(self, tokens: dict[str, Any]) -> tuple:
        return self._encode(self.loaded_module, tokens, self.options)


class CLIP:
    """Tokenizer + text encoder + patches; what CLIP sockets carry."""

    def __init__(self, target: Any = None, embedding_directory: str | None = None, no_init: bool = False,
                 tokenizer_data: dict | None = None, parameters: int = 0, model_options: dict | None = None,
                 *, tokenizer: Any = None, cond_stage_model: TextEncoderModel | None = None) -> None:
        self.tokenizer_options: dict[str, Any] = {}
        self.layer_idx: int | None = None
        self.use_clip_schedule = False
        self.apply_hooks_to_conds = None
        if no_init:
            return
        self.tokenizer = tokenizer
        self.cond_stage_model = cond_stage_model
        self.patcher = ModelPatcher(cond_stage_model)

    def clone(self) -> CLIP:
        n = CLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        n.layer_idx = self.layer_idx
        n.tokenizer_options = dict(self.tokenizer_options)
        n.use_clip_schedule = self.use_clip_schedule
        n.apply_hooks_to_conds = self.apply_hooks_to_conds
        return n

    def add_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        return self.patcher.add_patches(patches, strength_patch, strength_model)

    def set_tokenizer_option(self, option_name: str, value: Any) -> None:
        self.tokenizer_options[option_name] = value

    def clip_layer(self, layer_idx: int) -> None:
        self.layer_idx = layer_idx

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        options = {**self.tokenizer_options, **kwargs.pop("tokenizer_options", {})}
        if options:
            kwargs["tokenizer_options"] = options
        return self.tokenizer.tokenize_with_weights(text, return_word_ids, **kwargs)

    def add_hooks_to_dict(self, pooled_dict: dict[str, Any]) -> dict[str, Any]:
        if self.apply_hooks_to_conds:
            pooled_dict["hooks"] = self.apply_hooks_to_conds
        return pooled_dict

    def encode_from_tokens_scheduled(self, tokens: dict[str, Any], unprojected: bool = False,
                                     add_dict: dict[str, Any] | None = None, show_pbar: bool = True) -> list:
        out = self.encode_from_tokens(tokens, return_pooled="unprojected" if unprojected else True,
                                      return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict or {})
        return [[cond, out]]

    def _options(self, return_pooled: Any) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.layer_idx is not None:
            options["layer"] = self.layer_idx
        if return_pooled == "unprojected":
            options["projected_pooled"] = False
        return options

    def encode_from_tokens(self, tokens: dict[str, Any], return_pooled: Any = False,
                           return_dict: bool = False) -> Any:
        options = self._options(return_pooled)
        key = (self.patcher.weights_key(), _tokens_fingerprint(tokens), repr(sorted(options.items())))
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
        if hit is None:
            with self.patcher.use() as encoder:
                encoder.reset_clip_options()
                encoder.set_clip_options({**options, "execution_device": self.patcher.load_device})
                result = encoder.encode_token_weights(tokens)
            hit = {"cond": result[0], "pooled_output": result[1], **(result[2] if len(result) > 2 else {})}
            with _CACHE_LOCK:
                _CACHE[key] = hit
                while len(_CACHE) > _CACHE_SIZE:
                    _CACHE.popitem(last=False)
        out = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in hit.items()}
        if return_dict:
            return self.add_hooks_to_dict(out)
        if return_pooled:
            return out["cond"], out["pooled_output"]
        return out["cond"]

    def encode(self, text: str) -> torch.Tensor:
        return self.encode_from_tokens(self.tokenize(text))

    def load_model(self) -> ModelPatcher:
        self.patcher.patch_model()
        return self.patcher

    def get_key_patches(self) -> dict[str, list]:
        return self.patcher.get_key_patches()

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.patcher.model_state_dict()
