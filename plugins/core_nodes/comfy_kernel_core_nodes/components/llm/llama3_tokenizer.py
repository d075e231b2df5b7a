"""The Llama 3 / 3.1 byte-level BPE tokenizer, built with the ``tokenizers`` library from shipped files.

``llama3_tokenizer/`` holds Meta's Llama 3 vocabulary converted to a
vocabulary and merge list (``tools/llama3_tokenizer_data.py``; license in
its LICENSE); nothing is downloaded. No start token is added here: the
encoders that use it put ``<|begin_of_text|>`` in front themselves. Special
tokens such as ``<|eot_id|>`` are matched as whole tokens anywhere in the text.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .tokenizer import ByteLevelBPE

DATA = Path(__file__).parent / "llama3_tokenizer"

#: Llama 3's pre-tokenisation pattern (as Qwen2's, but digits in runs of up to three).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

BASE_TOKENS = 128000
BEGIN_OF_TEXT = 128000
END_OF_TEXT = 128001
EOT = 128009


def special_tokens() -> dict[str, int]:
    """The 256 special tokens after the base vocabulary, named as Llama 3's tokenizer names them."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>",
             9: "<|eot_id|>"}
    out, reserved = {}, 0
    for i in range(256):
        if i in named:
            out[named[i]] = BASE_TOKENS + i
        else:
            out[f"<|reserved_special_token_{reserved}|>"] = BASE_TOKENS + i
            reserved += 1
    return out


class Llama3Tokenizer(ByteLevelBPE):
    """Text -> token ids (and back) with Llama 3's vocabulary."""

    def __init__(self, data: Path = DATA) -> None:
        super().__init__(data, SPLIT_PATTERN, special_tokens(), ignore_merges=True)


@lru_cache(maxsize=1)
def llama3_tokenizer() -> Llama3Tokenizer:
    """The shared tokenizer (the vocabulary is read once)."""
    return Llama3Tokenizer()
