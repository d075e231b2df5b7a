"""CLIP: a text encoder (one or several) with its tokenizer, in ComfyUI's ``comfy.sd.CLIP`` shape.

``tokenize(text)`` gives ``{encoder name: [[(token, weight), ...], ...]}``
(``"l"`` for CLIP-L, ``"g"`` for OpenCLIP-G, ``"t5xxl"`` ...), and
``encode_from_tokens_scheduled(tokens)`` the CONDITIONING list. The weights
live in the model manager like every model's; ``clone()`` and ``add_patches``
give LoRA'd text encoders their own manager entry, as for MODEL.

Text encoders that are chat LLMs also generate text (TextGenerate):
``generate(tokens, ...)`` returns the new token ids and ``decode(ids)`` their
text, as ComfyUI's CLIP does; the family supplies the generation function.

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
    (``layer``, ``projected_pooled``, ``execution_device``). Decoder LLMs also
    pass ``generate(module, tokens, max_new_tokens, sampling, **callbacks) -> ids``.
    """

    def __init__(self, weights: WeightsSource, key_prefix: str, encode: Any, name: str = "clip",
                 generate: Any = None) -> None:
        self.weights = weights
        self.key_prefix = key_prefix
        self._encode = encode
        self._generate = generate
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

    def generate(self, tokens: dict[str, Any], max_new_tokens: int, sampling: Any, **callbacks: Any) -> list[int]:
        if self._generate is None:
            raise ValueError(f"this text encoder ({self.name}) cannot generate text: it is not a chat LLM here")
        return self._generate(self.loaded_module, tokens, max_new_tokens, sampling, **callbacks)

    def __getattr__(self, name: str) -> Any:
        key = _PARTS.get(name)
        if key is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return EncoderPart(self, key)


#: ComfyUI's attribute names for the encoders of a ``cond_stage_model`` and the token keys they read.
_PARTS = {"clip_l": "l", "clip_g": "g", "clip_h": "h", "t5xxl": "t5xxl"}


class EncoderPart:
    """One text encoder of a ``cond_stage_model`` (ComfyUI's ``clip_l`` ...): encodes only its own tokens.

    Prompt-weighting code written for ComfyUI (Easy-Use's, BlenderNeko's)
    encodes each encoder's token list on its own; here the family's encoding
    runs with only that key. Families that need every encoder's tokens at
    once (SDXL's two CLIPs) raise for a single part.
    """

    def __init__(self, model: TextEncoderModel, key: str) -> None:
        self.model = model
        self.key = key

    def encode_token_weights(self, token_weight_pairs: list) -> tuple:
        return self.model.encode_token_weights({self.key: token_weight_pairs})


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
        self.patcher.is_clip = True

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
        """CONDITIONING of ``tokens``; with scheduled CLIP hooks, one entry per range of constant hook strengths
        (``clip_start_percent`` / ``clip_end_percent``), encoded with the hooks at those strengths."""
        add_dict = add_dict or {}
        hooks = self.patcher.forced_hooks
        if hooks is None or not self.use_clip_schedule:
            out = self.encode_from_tokens(tokens, return_pooled="unprojected" if unprojected else True,
                                          return_dict=True)
            cond = out.pop("cond")
            out.update(add_dict)
            return [[cond, out]]
        entries = []
        hooks.reset()
        for t_range, keyframes in hooks.get_hooks_for_clip_schedule():
            if "start_percent" in add_dict and t_range[1] < add_dict["start_percent"]:
                continue
            if "end_percent" in add_dict and t_range[0] > add_dict["end_percent"]:
                continue
            for hook, keyframe in keyframes:
                hook.hook_keyframe._current_keyframe = keyframe
            out = self.encode_from_tokens(tokens, return_pooled="unprojected" if unprojected else True,
                                          return_dict=True)
            cond = out.pop("cond")
            pooled = {"pooled_output": out["pooled_output"], "clip_start_percent": t_range[0],
                      "clip_end_percent": t_range[1], **add_dict}
            entries.append([cond, self.add_hooks_to_dict(pooled)])
        hooks.reset()
        return entries

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
        hooks = self.patcher.forced_hooks
        weights_key = self.patcher.weights_key() + self.patcher._hooks_key(
            hooks, self.patcher.get_combined_hook_patches(hooks)) if hooks is not None else self.patcher.weights_key()
        key = (weights_key, _tokens_fingerprint(tokens), repr(sorted(options.items())))
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
        if hit is None:
            with self.patcher.use_hooks(hooks) as encoder:
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

    def generate(self, tokens: dict[str, Any], do_sample: bool = True, max_length: int = 256,
                 temperature: float = 1.0, top_k: int = 50, top_p: float = 0.95, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, seed: int | None = None, presence_penalty: float = 0.0,
                 mtp: Any = False) -> list[int]:
        """Token ids the text encoder generates after the prompt ``tokens`` (at most ``max_length``).

        ``mtp`` (multi-token-prediction drafting) changes nothing here: no
        encoder loaded here has MTP weights.
        """
        from comfy_kernel.progress import ProgressBar, throw_exception_if_processing_interrupted

        from ..components.llm.generate import Sampling

        if self.cond_stage_model._generate is None:  # say so before loading the weights
            raise ValueError(f"this text encoder ({self.cond_stage_model.name}) cannot generate text: "
                             "it is not a chat LLM here")

        sampling = Sampling(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                            repetition_penalty=repetition_penalty, presence_penalty=presence_penalty or 0.0,
                            seed=seed)
        bar = ProgressBar(max_length)
        with self.patcher.use() as encoder:
            return encoder.generate(tokens, max_length, sampling, interrupt=throw_exception_if_processing_interrupted,
                                    progress=lambda: bar.update(1))

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def load_model(self) -> ModelPatcher:
        self.patcher.patch_model()
        return self.patcher

    def get_key_patches(self) -> dict[str, list]:
        return self.patcher.get_key_patches()

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.patcher.model_state_dict()
