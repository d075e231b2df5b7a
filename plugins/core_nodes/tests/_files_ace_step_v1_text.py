"""ACE-Step 1.0's text side, small: umt5 in the checkpoint's layout with a SentencePiece model trained here.

``text_state_dict(seed)`` has the keys of ``ace_step_v1_3.5b.safetensors``'s
text side: umt5 under ``text_encoders.umt5base.transformer.`` (``shared``,
``encoder.block.N...`` with a relative position table in every block) and
the tokenizer as the byte tensor ``text_encoders.spiece_model``. The umt5 is
128 wide (two heads of 64), three blocks deep, with 160 embedding rows; the
SentencePiece model (umt5's ids: pad 0, end 1, unknown 2, no start) is
trained on a few tag lines without normalisation, which keeps it under a
kilobyte. Only torch and sentencepiece are imported at module level, so
ComfyUI's environment can import ``spiece_model`` (the recorder does).
"""

from __future__ import annotations

import functools
import io

import torch
from _random_weights import module_shapes, random_state_dict

PREFIX = "text_encoders.umt5base.transformer."
SPIECE_KEY = "text_encoders.spiece_model"
WIDTH = 128
LAYERS = 3
VOCAB_ROWS = 160
CORPUS = [
    "rock, electric guitar, drums, male vocals, energetic, 120 bpm",
    "pop, synth, female vocal, happy, catchy chorus",
    "jazz piano trio, slow tempo, smoky bar, upright bass",
    "ambient, pads, cinematic strings, calm, reverb",
    "hip hop, 808 bass, rap, dark, trap hi-hats",
    "folk, acoustic guitar, harmonica, warm, storytelling",
]


@functools.lru_cache(maxsize=1)
def spiece_model() -> bytes:
    """A tiny unigram SentencePiece model with umt5's special ids."""
    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=out, vocab_size=120, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        normalization_rule_name="identity", minloglevel=2, num_threads=1)
    return out.getvalue()


def umt5_config(width: int = WIDTH):
    from comfy_kernel_core_nodes.components.t5 import T5Config

    return T5Config(vocab_size=VOCAB_ROWS, width=width, ff_width=192, heads=width // 64, layers=LAYERS,
                    per_layer_bias=True)


def umt5_state_dict(seed: int, width: int = WIDTH) -> dict[str, torch.Tensor]:
    """The encoder's own keys (``shared.weight``, ``encoder...``) in float32, random."""
    from comfy_kernel_core_nodes.components.t5 import T5Encoder
    from comfy_kernel_core_nodes.model import ops

    with torch.device("meta"):
        shapes = module_shapes(T5Encoder(umt5_config(width), ops.plain))
    sd = random_state_dict(shapes, seed, torch.float32)
    sd["shared.weight"] = sd["shared.weight"] * 10  # rows of about unit size, as trained embeddings have
    return sd


def text_state_dict(seed: int, width: int = WIDTH) -> dict[str, torch.Tensor]:
    """The checkpoint's text side: umt5 under ``text_encoders.umt5base.transformer.`` and its tokenizer
    (``width``: what the transformer it goes with reads)."""
    sd = {PREFIX + k: v for k, v in umt5_state_dict(seed, width).items()}
    sd[SPIECE_KEY] = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
    return sd
