"""The Qwen2.5 / Qwen3 byte-level BPE tokenizer, built with the ``tokenizers`` library from shipped files.

The vocabulary and merges (``qwen_tokenizer/``, Apache-2.0, see its LICENSE)
are read from the package, never downloaded. Special tokens such as
``<|im_start|>`` and ``<|image_pad|>`` are matched as whole tokens anywhere in
the text, as the chat templates of the Qwen-based encoders need; no start or
end token is added.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "qwen_tokenizer"

#: Qwen2's pre-tokenisation pattern (contractions, letter runs, single digits, punctuation, spaces).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIAL_TOKENS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649, "<|quad_start|>": 151650,
    "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664, "<|img|>": 151665, "<|endofimg|>": 151666,
    "<|meta|>": 151667, "<|endofmeta|>": 151668,
}

PAD_TOKEN = SPECIAL_TOKENS["<|endoftext|>"]
IM_START = SPECIAL_TOKENS["<|im_start|>"]
IMAGE_PAD = SPECIAL_TOKENS["<|image_pad|>"]


class ByteLevelBPE:
    """Text -> token ids (and back) with a byte-level BPE read from ``vocab.json.gz`` / ``merges.txt.gz``.

    The Qwen and Llama 3 tokenizers differ only in their files, split pattern,
    special tokens, Qwen's NFC normalisation and Llama's whole-word lookup
    before merging (``ignore_merges``).
    """

    def __init__(self, data: Path, split_pattern: str, specials: dict[str, int], *, nfc: bool = False,
                 ignore_merges: bool = False) -> None:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

        with gzip.open(data / "vocab.json.gz", "rt", encoding="utf-8") as f:
            vocab = json.load(f)
        with gzip.open(data / "merges.txt.gz", "rt", encoding="utf-8") as f:
            merges = [tuple(line.split(" ")) for line in f.read().split("\n")[1:] if line]
        tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False,
                                         ignore_merges=ignore_merges))
        if nfc:
            tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                      for t in sorted(specials, key=specials.get)])
        for token, wanted in specials.items():
            if tokenizer.token_to_id(token) != wanted:
                raise ValueError(f"tokenizer data: {token} is not id {wanted}")
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        with self._lock:
            return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)


class QwenTokenizer(ByteLevelBPE):
    """Text -> token ids (and back) with Qwen2.5's vocabulary."""

    def __init__(self, data: Path = DATA) -> None:
        super().__init__(data, SPLIT_PATTERN, SPECIAL_TOKENS, nfc=True)


@lru_cache(maxsize=1)
def qwen_tokenizer() -> QwenTokenizer:
    """The shared tokenizer (loading the vocabulary takes a moment; it is read once)."""
    return QwenTokenizer()


SPIECE_KEY = "spiece_model"


def spiece_model(path: str, in_checkpoint: bool = True) -> bytes | None:
    """The SentencePiece model stored in a text-encoder file, or placed beside it; None when neither.

    A text encoder file keeps it as ``spiece_model``, a checkpoint as
    ``text_encoders.spiece_model`` (ComfyUI saves the tokenizer's state beside
    the encoder's keys, under the checkpoint's text encoder prefix); beside the
    file it is ``<name>.model`` or ``tokenizer.model``.
    """
    from safetensors import safe_open

    keys = [SPIECE_KEY] + (["text_encoders." + SPIECE_KEY] if in_checkpoint else [])
    with safe_open(path, framework="pt") as f:
        for key in keys:
            if key in f.keys():
                return f.get_tensor(key).numpy().tobytes()
    folder, name = os.path.split(path)
    for candidate in (os.path.splitext(name)[0] + ".model", "tokenizer.model"):
        beside = os.path.join(folder, candidate)
        if os.path.isfile(beside):
            with open(beside, "rb") as f:
                return f.read()
    return None
