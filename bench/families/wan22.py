"""Wan 2.2 5B TI2V for ``txt2img.py --family wan22``: the real transformer width (3072, 24 heads), fewer blocks.

The released model has 30 blocks; this one has ``BLOCKS`` (per-step time
scales about linearly with the block count, so the full model's step is
roughly ``FULL_SCALE`` times the one measured). umt5 is cut to 1024 wide
(16 heads) with 2 layers and a small SentencePiece vocabulary trained here
(it runs once per prompt; the transformer's text projection takes 1024
inputs to match); the VAE is the full Wan 2.2 VAE. Random bf16
weights, written into the benchmark's temporary model folders; the graph is
the video_wan2_2_5B_ti2v template's shape (ModelSamplingSD3 shift 8,
Wan22ImageToVideoLatent, cfg 5, uni_pc) at ``size`` x ``size`` and 5 frames,
the frames saved with SaveImage so txt2img.py's timings apply.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .flux import _random, _shapes

BLOCKS = 1
FULL_SCALE = 30 / BLOCKS
FRAMES = 5
TEXT_WIDTH = 1024
WORDS = ["a cat walks through a sunny garden", "waves crash on the rocks under a stormy sky",
         "the camera pans slowly over a busy city street at night", "a small boat floats on a calm lake"]


def _spiece() -> bytes:
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(WORDS * 8), model_writer=out, vocab_size=64,
                                             model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return out.getvalue()


def prepare(base: Path) -> None:
    """Write the diffusion model, text encoder and VAE under ``base/models``."""
    import sentencepiece
    import torch
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.components.t5 import T5Config, T5Encoder
    from comfy_kernel_core_nodes.components.wan_vae import WanVAE22
    from comfy_kernel_core_nodes.families.wan.transformer import WanConfig, WanTransformer
    from comfy_kernel_core_nodes.model import ops

    spiece = _spiece()
    vocab = sentencepiece.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    with torch.device("meta"):
        parts = {
            "diffusion_models/wan2.2_ti2v_5B-bench.safetensors": WanTransformer(WanConfig(
                in_dim=48, out_dim=48, dim=3072, ffn_dim=14336, num_heads=24, num_layers=BLOCKS,
                text_dim=TEXT_WIDTH)),
            "text_encoders/umt5_xxl-2layers.safetensors": T5Encoder(
                T5Config(vocab_size=vocab, width=TEXT_WIDTH, ff_width=2816, heads=TEXT_WIDTH // 64, layers=2,
                         per_layer_bias=True), ops.plain),
            "vae/wan2.2_vae.safetensors": WanVAE22(),
        }
    for name, module in parts.items():
        path = base / "models" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = _random(_shapes(module), torch.bfloat16)
        if name.startswith("text_encoders/"):
            tensors["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
        save_file(tensors, str(path))


def prompt(size: int, steps: int) -> dict[str, Any]:
    """The 5B TI2V template's shape, with the node ids txt2img.py reads (5 KSampler, 6 decode, 7 save)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_ti2v_5B-bench.safetensors",
                                                     "weight_dtype": "default"}},
        "8": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl-2layers.safetensors", "type": "wan",
                                                     "device": "default"}},
        "9": {"class_type": "VAELoader", "inputs": {"vae_name": "wan2.2_vae.safetensors"}},
        "10": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "a cat walks in a garden"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["8", 0], "text": "static, blurred"}},
        "4": {"class_type": "Wan22ImageToVideoLatent", "inputs": {
            "vae": ["9", 0], "width": size, "height": size, "length": FRAMES, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": steps, "cfg": 5.0, "sampler_name": "uni_pc", "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["9", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }
