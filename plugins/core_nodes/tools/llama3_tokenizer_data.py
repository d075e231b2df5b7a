"""Writes components/llm/llama3_tokenizer/ (vocab.json.gz, merges.txt.gz) from Meta's Llama 3 tokenizer.model.

tokenizer.model (in the ``llama-models`` package on PyPI, ``llama_models/llama3/``)
lists each base token as base64 bytes and its rank. The ``tokenizers``
library's BPE wants a vocabulary of byte-level strings and an ordered merge
list instead: each token's merges are its splits into two tokens, in the
order of the token's rank. Run once when the data
changes: ``python plugins/core_nodes/tools/llama3_tokenizer_data.py PATH/tokenizer.model``.
"""

from __future__ import annotations

import base64
import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "comfy_kernel_core_nodes" / "components" / "llm" / "llama3_tokenizer"


def byte_alphabet() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte (what byte-level BPE vocabularies are written in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def splits_of(token: bytes, ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every way to build ``token`` from two tokens, the pair of better-ranked pieces first.

    Listing them all (not only the pair rank-ordered merging of the bytes reaches)
    keeps the few tokens whose bytes never merge that way reachable, as they are
    for Meta's tokenizer, which merges whole pieces by their rank.
    """
    pairs = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
    return sorted(pairs, key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))


def main(model_path: str) -> None:
    ranks: dict[bytes, int] = {}
    for line in Path(model_path).read_text().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    alphabet = byte_alphabet()

    def text(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, _rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            merges.extend(f"{text(left)} {text(right)}" for left, right in splits_of(token, ranks))
    OUT.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT / "vocab.json.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with gzip.open(OUT / "merges.txt.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
