"""CLIP byte-pair-encoding tokenizer (the one of openai/clip-vit-large-patch14).

SD1.x conditions on CLIP token ids, so the ids must be exactly those of the
tokenizer the checkpoints were trained with: text is NFC-normalised, runs of
whitespace become one space, everything is lower-cased, split with CLIP's
pre-tokenisation pattern, mapped byte-wise to printable characters and merged
with the BPE ranks of the shipped vocabulary file.
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from pathlib import Path

import regex

VOCAB_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
START_TOKEN = 49406
END_TOKEN = 49407
VOCAB_SIZE = 49408
_NUM_MERGES = VOCAB_SIZE - 256 * 2 - 2
_WORD_END = "</w>"

_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def _byte_alphabet() -> dict[int, str]:
    """Map every byte to a printable character, so BPE never sees whitespace or control bytes.

    Printable latin-1 bytes stand for themselves; the others are shifted to
    code points from 256 upwards, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class CLIPTokenizer:
    """Text to CLIP token ids, without start/end tokens (callers add those where they need them)."""

    def __init__(self, vocab_file: Path | str = VOCAB_FILE) -> None:
        with gzip.open(vocab_file, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
        self._byte_chars = _byte_alphabet()
        symbols = list(self._byte_chars.values())
        symbols += [s + _WORD_END for s in symbols]
        symbols += ["".join(pair) for pair in merges]
        symbols += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(symbols)}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self._ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self._bytes_of_char = {c: b for b, c in self._byte_chars.items()}
        self._bpe_cached = functools.lru_cache(maxsize=65536)(self._bpe)

    @staticmethod
    def normalize(text: str) -> str:
        """NFC, whitespace runs to one space, lower case (what the reference tokenizer does)."""
        return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip().lower()

    def _bpe(self, piece: str) -> tuple[str, ...]:
        word = list(piece[:-1]) + [piece[-1] + _WORD_END]
        while len(word) > 1:
            best_rank, best_i = None, -1
            for i in range(len(word) - 1):
                rank = self._ranks.get((word[i], word[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_i = rank, i
            if best_rank is None:
                break
            first, second = word[best_i], word[best_i + 1]
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no start or end token)."""
        ids: list[int] = []
        for piece in _PRETOKENIZE.findall(self.normalize(text)):
            if piece in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.encoder[piece])
                continue
            mapped = "".join(self._byte_chars[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe_cached(mapped))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, for logs and debugging."""
        chars = "".join(self.decoder[i] for i in ids)
        raw = bytearray(self._bytes_of_char.get(c, ord(" ")) for c in chars.replace(_WORD_END, " "))
        return raw.decode("utf-8", errors="replace").replace("<|startoftext|>", "").strip()


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> CLIPTokenizer:
    """The shared tokenizer instance; loading the vocabulary takes a fraction of a second."""
    return CLIPTokenizer()
