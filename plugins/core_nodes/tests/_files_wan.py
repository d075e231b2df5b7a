"""Random-weight files of the Wan family in ComfyUI's key layouts (see _random_weights).

Wan's detection reads every width it needs from the keys (model width, heads
of 128, feed-forward width, text width, input / output channels, VAE widths),
so these files are small: a 256-wide transformer with two blocks, a two-layer
128-wide umt5 with a SentencePiece model trained here on a few sentences
(stored as ComfyUI's files store theirs, the ``spiece_model`` byte tensor),
and VAEs with 16 / 32 base channels. Files are written once into the
repository's ``.cache`` and reused; the version in each name changes when a
recipe does.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import torch
from _random_weights import cached_file, fp8_state_dict, module_shapes, random_state_dict

from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
from comfy_kernel_core_nodes.components.wan_vae import WanVAE, WanVAE22
from comfy_kernel_core_nodes.families.wan.transformer import WanConfig, WanTransformer
from comfy_kernel_core_nodes.model import ops

VERSION = "v1"
TEXT_WIDTH = 128

CORPUS = [
    "a cat walks through a sunny garden", "a red car drives along the coast at sunset",
    "waves crash on the rocks under a stormy sky", "a dog runs across the snowy field",
    "the camera pans slowly over a busy city street at night", "a woman dances in the rain",
    "birds fly above the mountains in the morning light", "a small boat floats on a calm lake",
    "bright colors, overexposed, static, blurred details, subtitles, worst quality, low quality",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止",
]


@functools.lru_cache(maxsize=1)
def spiece_model() -> bytes:
    """A small SentencePiece unigram model with umt5's special ids (pad 0, end 1, unknown 2, no start)."""
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 4), model_writer=out, vocab_size=160,
                                             model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             character_coverage=1.0, hard_vocab_limit=False,
                                             minloglevel=2, num_threads=1)
    return out.getvalue()


def _shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return module_shapes(build())


def transformer_config(kind: str) -> WanConfig:
    base = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=TEXT_WIDTH)
    return {
        "t2v": WanConfig(**base),
        "i2v": WanConfig(model_type="i2v", in_dim=36, image_embedding=True, **base),
        "i2v22": WanConfig(in_dim=36, **base),
        "ti2v": WanConfig(in_dim=48, out_dim=48, **base),
        "vace": WanConfig(model_type="vace", vace_layers=1, vace_in_dim=96, **base),
        "fun5b": WanConfig(in_dim=100, out_dim=48, **base),
        "control22": WanConfig(in_dim=52, in_dim_ref_conv=16, **base),
        "control5b": WanConfig(in_dim=148, out_dim=48, in_dim_ref_conv=48, **base),
        "camera21": WanConfig(model_type="camera", in_dim=32, image_embedding=True, in_dim_control_adapter=24,
                              **base),
        "camera22": WanConfig(model_type="camera_2.2", in_dim=36, in_dim_control_adapter=24, **base),
    }[kind]


def transformer_sd(kind: str, dtype: torch.dtype = torch.float16, seed: int = 1) -> dict[str, torch.Tensor]:
    return random_state_dict(_shapes(lambda: WanTransformer(transformer_config(kind), ops.plain)), seed, dtype)


def transformer_file(kind: str, fp8_scaled: bool = False, seed: int = 1) -> Path:
    """``kind``: t2v, i2v (Wan 2.1 with CLIP image projection), i2v22 (Wan 2.2 14B I2V), ti2v (5B), vace,
    fun5b (Wan 2.2 Fun-InP 5B: 48 noise + 48 image + 4 mask channels), control22 / control5b (Wan 2.2
    Fun-Control 14B / 5B: control and start latents, mask, a reference image's ``ref_conv``), camera21 /
    camera22 (Wan 2.1 Fun camera v1.1 with CLIP image projection / Wan 2.2 14B Fun camera: start latents
    (and mask), the camera ``control_adapter``)."""
    tag = "fp8_scaled" if fp8_scaled else "fp16"

    def make() -> dict[str, torch.Tensor]:
        sd = transformer_sd(kind, seed=seed)
        return fp8_state_dict(sd, scaled=True) if fp8_scaled else sd

    return cached_file(f"{VERSION}-wan_{kind}_{tag}_{seed}.safetensors", make)


def umt5_config() -> T5Config:
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_proto=spiece_model()).get_piece_size()
    return T5Config(vocab_size=vocab, width=TEXT_WIDTH, ff_width=256, heads=TEXT_WIDTH // 64, layers=2,
                    per_layer_bias=True)


def umt5_file(fp8_scaled: bool = True) -> Path:
    """umt5 in ComfyUI's standalone layout (``encoder.block.N...``, ``shared``) with its ``spiece_model``."""
    def make() -> dict[str, torch.Tensor]:
        sd = random_state_dict(_shapes(lambda: T5Encoder(umt5_config(), ops.plain)), 3, torch.float16)
        sd["shared.weight"] = sd["shared.weight"] * 10
        if fp8_scaled:
            sd = fp8_state_dict(sd, scaled=True, skip=lambda key: key.startswith("shared."))
        sd["spiece_model"] = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
        return sd

    return cached_file(f"{VERSION}-umt5_xxl_{'fp8_scaled' if fp8_scaled else 'fp16'}.safetensors", make)


def vae21_file() -> Path:
    return cached_file(f"{VERSION}-wan_2.1_vae_small.safetensors",
                       lambda: random_state_dict(_shapes(lambda: WanVAE(ops.plain, dim=16)), 4, torch.float16))


def vae22_file() -> Path:
    return cached_file(f"{VERSION}-wan2.2_vae_small.safetensors",
                       lambda: random_state_dict(_shapes(lambda: WanVAE22(ops.plain, dim=16, dec_dim=32)), 5,
                                                 torch.float16))


def lora_file(kind: str, rank: int = 4, seed: int = 7) -> Path:
    """A LoRA on projections of every block plus a bias and a norm difference, as the lightx2v files hold them."""
    def make() -> dict[str, torch.Tensor]:
        c = transformer_config(kind)
        g = torch.Generator().manual_seed(seed)
        out = {}
        for i in range(c.num_layers):
            for part in ("self_attn.q", "self_attn.k", "cross_attn.v", "ffn.0"):
                rows = c.ffn_dim if part == "ffn.0" else c.dim
                base = f"diffusion_model.blocks.{i}.{part}"
                out[base + ".lora_down.weight"] = (torch.randn(rank, c.dim, generator=g) * 0.05).half()
                out[base + ".lora_up.weight"] = (torch.randn(rows, rank, generator=g) * 0.05).half()
        out["diffusion_model.blocks.0.self_attn.q.diff_b"] = (torch.randn(c.dim, generator=g) * 0.05).half()
        out["diffusion_model.blocks.0.norm3.diff"] = (torch.randn(c.dim, generator=g) * 0.05).half()
        return out

    return cached_file(f"{VERSION}-wan_{kind}_lora_diff_{seed}.safetensors", make)


def clip_vision_h_file() -> Path:
    """A full-size random ViT-H/14 (``clip_vision_h``, about 1.3 GB in fp16: detection counts its 32 layers)."""
    from _vision_files import clip_vision_sd

    return cached_file(f"{VERSION}-clip_vision_h.safetensors", lambda: clip_vision_sd("vit_h", seed=12))


def place(path: Path, folder: Path, name: str) -> Path:
    """A copy of ``path`` as ``folder/name`` (model folders do not follow links out of themselves)."""
    import shutil

    target = folder / name
    if not target.exists():
        shutil.copyfile(path, target)
    return target
