"""A tiny Wan 2.1 I2V transformer with an InfiniteTalk patch, their seeded weights, inputs and ComfyUI's outputs.

``data/wan_infinitetalk/reference.npz`` was recorded from ComfyUI 0.18.1's
``WanModel``, ``MultiTalkModelPatch`` (``comfy/ldm/wan/model_multitalk.py``)
and ``WanInfiniteTalkToVideo`` with the weights and inputs made here
(``data/wan_infinitetalk/record.py`` says how), so this module imports
nothing of this project at its top. The file writers for the server test
import the project lazily.

The transformer is 320 wide with two heads (the width ComfyUI's detection
reads as two heads of 160), two blocks, 128-wide text; the patch keeps the
released model's fixed parts (40 blocks of 40-head audio attention, the
12 x 768 wav2vec2 base states in five- and eight-frame windows, 32 tokens per
latent frame) with a 16-wide projection and 32-wide audio tokens.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from _files_wan_s2v import random_weights

REFERENCE = Path(__file__).parent / "data" / "wan_infinitetalk" / "reference.npz"
VERSION = "v1"

#: ComfyUI's ``WanModel(**WAN)``
WAN = dict(model_type="i2v", dim=320, ffn_dim=640, num_heads=2, num_layers=2, text_dim=128, in_dim=36, out_dim=16,
           freq_dim=256)
#: ComfyUI's ``MultiTalkModelPatch(**PATCH)`` (as its loader builds it, with these widths)
PATCH = dict(audio_window=5, context_tokens=32, vae_scale=4, in_dim=320, intermediate_dim=16, out_dim=32)
#: the audio scale of the recorded forwards
SCALE = 0.7


def transformer_inputs() -> dict[str, torch.Tensor]:
    """x [1, 36, 3, 4, 6] (noise and image channels), timestep, text; the token grid is 3 x 2 x 3."""
    g = torch.Generator().manual_seed(21)
    return dict(x=torch.randn(1, 36, 3, 4, 6, generator=g), timestep=torch.tensor([600.0]),
                context=torch.randn(1, 5, 128, generator=g))


def speaker_states(frames: int, seed: int) -> torch.Tensor:
    """Stand-in wav2vec2 states at 25 a second: [frames, 12, 768]."""
    return torch.randn(frames, 12, 768, generator=torch.Generator().manual_seed(seed))


def token_masks() -> torch.Tensor:
    """The two speakers' first-frame tokens (2 x 3 grid): left and right columns."""
    return torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 1, 0, 1, 1]], dtype=torch.bool)


def attention_inputs() -> dict[str, torch.Tensor]:
    """Self-attention q / k [1, 18, 4, 8] and video tokens [1, 18, 320] for the map and the audio attention."""
    g = torch.Generator().manual_seed(22)
    return dict(q=torch.randn(1, 18, 4, 8, generator=g), k=torch.randn(1, 18, 4, 8, generator=g),
                x=torch.randn(1, 18, 320, generator=g))


def encoder_output(samples: int, seed: int) -> dict[str, Any]:
    """An AUDIO_ENCODER_OUTPUT of wav2vec2 base's 13 states (50 a second) for ``samples`` at 16 kHz."""
    frames = samples // 320
    states = torch.randn(13, 1, frames, 768, generator=torch.Generator().manual_seed(seed))
    return {"encoded_audio": states[-1], "encoded_audio_all_layers": tuple(states), "audio_samples": samples}


def start_image() -> torch.Tensor:
    return torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(23))


def previous_frames() -> torch.Tensor:
    return torch.rand(12, 48, 64, 3, generator=torch.Generator().manual_seed(24))


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel masks [1, 48, 64] of the two speakers (left, right)."""
    left = torch.zeros(1, 48, 64)
    left[:, 8:40, 4:30] = 1
    right = torch.zeros(1, 48, 64)
    right[:, 10:44, 34:62] = 1
    return left, right


#: node cases: (mode, with a second speaker, extending a video, audio samples of speaker 1 and 2)
NODE_CASES = {"single": ("single_speaker", False, False), "two": ("two_speakers", True, False),
              "extend": ("two_speakers", True, True)}


class StubModel:
    """What the node needs of a MODEL: clones that collect the options, patches and wrappers set on them."""

    def __init__(self) -> None:
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.patches: dict[str, list[Any]] = {}
        self.wrappers: dict[str, Any] = {}

    def clone(self) -> StubModel:
        return StubModel()

    def model_dtype(self) -> torch.dtype:
        return torch.float32

    def set_model_patch(self, patch: Any, name: str) -> None:
        self.patches.setdefault(name, []).append(patch)

    def add_wrapper_with_key(self, kind: str, key: str, wrapper: Any) -> None:
        self.wrappers[key] = wrapper


class StubPatch:
    """A MODEL_PATCH around a network, as ComfyUI's node (``.model``) and this project's (``use()``) read it."""

    def __init__(self, net: torch.nn.Module, kind: str = "multitalk") -> None:
        net.patch_kind = kind
        self.model = net

    @contextmanager
    def use(self) -> Any:
        yield SimpleNamespace(loaded_module=self.model)


def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}


def recorded_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes ComfyUI's network of ``name`` ("wan" or "patch") had when recording."""
    return {k: tuple(v) for k, v in json.loads(str(reference()[f"{name}_shapes"])).items()}


def weights(name: str) -> dict[str, torch.Tensor]:
    return random_weights(recorded_shapes(name), {"wan": 31, "patch": 32}[name])


def wan_file() -> Path:
    """The tiny Wan 2.1 I2V model in ComfyUI's file layout, fp16."""
    from _random_weights import cached_file

    return cached_file(f"{VERSION}-wan_infinitetalk_i2v_fp16.safetensors",
                       lambda: {k: v.half() for k, v in weights("wan").items()})


def patch_file() -> Path:
    """The tiny InfiniteTalk patch as ``wan2.1_infiniteTalk_multi_fp16`` stores it (40 blocks), fp16."""
    from _random_weights import cached_file

    return cached_file(f"{VERSION}-infinitetalk_patch_fp16.safetensors",
                       lambda: {k: v.half() for k, v in weights("patch").items()})


def wav2vec2_base_file() -> Path:
    """A wav2vec2 base layout (12 layers, 768 wide, the widths the patch reads) with a small feature extractor
    and feed-forward, fp16."""
    from _random_weights import cached_file, module_shapes

    from comfy_kernel_core_nodes.families.wan.wav2vec2 import Wav2Vec2, Wav2Vec2Config
    from comfy_kernel_core_nodes.model import ops

    config = Wav2Vec2Config(width=768, layers=12, conv_dim=32, conv_bias=False, large=False, position_kernel=16,
                            position_groups=16, ffn_dim=64)

    def make() -> dict[str, torch.Tensor]:
        with torch.device("meta"):
            shapes = module_shapes(Wav2Vec2(config, ops.plain))
        sd = {k: v.half() for k, v in random_weights(shapes, 33).items()}
        stem = "encoder.pos_conv_embed.conv."
        sd[stem + "weight_g"] = sd.pop(stem + "parametrizations.weight.original0")
        sd[stem + "weight_v"] = sd.pop(stem + "parametrizations.weight.original1")
        return sd

    return cached_file(f"{VERSION}-wav2vec2_base_small_fp16.safetensors", make)


def lora_file(rank: int = 4, seed: int = 7) -> Path:
    """A LoRA on the tiny model's self-attention queries and feed-forward inputs, as the lightx2v files hold it."""
    from _random_weights import cached_file

    def make() -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        out = {}
        for i in range(WAN["num_layers"]):
            for part, rows in (("self_attn.q", WAN["dim"]), ("ffn.0", WAN["ffn_dim"])):
                base = f"diffusion_model.blocks.{i}.{part}"
                out[base + ".lora_down.weight"] = (torch.randn(rank, WAN["dim"], generator=g) * 0.05).half()
                out[base + ".lora_up.weight"] = (torch.randn(rows, rank, generator=g) * 0.05).half()
        return out

    return cached_file(f"{VERSION}-wan_infinitetalk_lora_{seed}.safetensors", make)
