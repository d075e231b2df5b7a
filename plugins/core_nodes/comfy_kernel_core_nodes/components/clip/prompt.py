"""ComfyUI's prompt syntax: emphasis weights, textual-inversion embeddings and 77-token chunks.

The output is what the text encoder consumes: a list of chunks, each a list of
exactly 77 (token, weight) pairs, where a token is either a CLIP token id or an
embedding vector (a 1-d tensor of the encoder's width) from a textual-inversion
file. Matching ComfyUI exactly matters because a different chunk boundary or
weight changes the conditioning and therefore the image.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Union

import torch

from .tokenizer import END_TOKEN, START_TOKEN, CLIPTokenizer, default_tokenizer

Token = Union[int, torch.Tensor]
WeightedToken = tuple[Token, float]

CHUNK_LENGTH = 77
MAX_UNSPLIT_PIECE = 8
EMPHASIS = 1.1
EMBEDDING_PREFIX = "embedding:"
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")

_ESCAPED_CLOSE = "\0\1"
_ESCAPED_OPEN = "\0\2"

log = logging.getLogger(__name__)


def _escape(text: str) -> str:
    return text.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)


def _unescape(text: str) -> str:
    return text.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "(")


def _split_top_level(text: str) -> list[str]:
    """Split into plain runs and top-level "(...)" groups, keeping the parentheses.

    An unmatched ")" stays part of the surrounding text, as in ComfyUI.
    """
    parts: list[str] = []
    current = ""
    depth = 0
    for ch in text:
        if ch == "(":
            if depth == 0:
                if current:
                    parts.append(current)
                current = "("
            else:
                current += ch
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + ")")
                current = ""
            else:
                current += ch
        else:
            current += ch
    if current:
        parts.append(current)
    return parts


def _parse(text: str, weight: float) -> list[tuple[str, float]]:
    pieces: list[tuple[str, float]] = []
    for part in _split_top_level(text):
        if len(part) >= 2 and part[0] == "(" and part[-1] == ")":
            inner = part[1:-1]
            inner_weight = weight * EMPHASIS
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1 :])
                    inner = inner[:colon]
                except ValueError:
                    pass
            pieces.extend(_parse(inner, inner_weight))
        else:
            pieces.append((part, weight))
    return pieces


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) pieces.

    "(x)" multiplies the weight by 1.1, "(x:1.3)" sets it to 1.3, "\\(" and "\\)"
    are literal parentheses, square brackets are ordinary text.
    """
    return [(_unescape(piece), w) for piece, w in _parse(_escape(text), 1.0)]


def load_embedding(name: str, directory: Path | str, width: int = 768) -> torch.Tensor | None:
    """Vectors [n, width] of the textual-inversion file `name` in `directory`, or None.

    The name may omit the extension; files outside the directory are refused.
    """
    root = Path(directory).resolve()
    candidates = [root / name] + [root / (name + ext) for ext in EMBEDDING_EXTENSIONS]
    for path in candidates:
        path = path.resolve()
        if not path.is_file() or root not in path.parents:
            continue
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                data = load_file(str(path), device="cpu")
            else:
                data = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # a broken file is reported like a missing one
            log.warning("could not load embedding %s: %s", path, exc)
            return None
        return _embedding_vectors(data, width)
    return None


def _embedding_vectors(data: object, width: int) -> torch.Tensor | None:
    if isinstance(data, dict) and "string_to_param" in data:
        tensor = next(iter(data["string_to_param"].values()))
    elif isinstance(data, dict) and ("clip_l" in data or "clip_g" in data):
        tensor = next((data[k] for k in ("clip_l", "clip_g") if k in data and data[k].shape[-1] == width), None)
    elif isinstance(data, dict):
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor) and v.shape[-1] == width]
        tensor = tensors[0] if tensors else None
    elif isinstance(data, torch.Tensor):
        tensor = data
    else:
        tensor = None
    if tensor is None or tensor.shape[-1] != width:
        return None
    return tensor.reshape(-1, width).float()


def _split_embedding_name(text: str) -> tuple[str, str]:
    """'name rest of text' -> ('name', 'rest of text')."""
    words = text.split()
    return (words[0] if words else ""), " ".join(words[1:])


def _piece_tokens(
    text: str,
    weight: float,
    tokenizer: CLIPTokenizer,
    embedding_dir: Path | str | None,
    width: int,
) -> list[list[WeightedToken]]:
    """Token groups of one weighted piece: the text, cut before each "embedding:" word."""
    parts = re.split(" " + EMBEDDING_PREFIX + "|\n" + EMBEDDING_PREFIX, text)
    words = [parts[0]] + [EMBEDDING_PREFIX + p for p in parts[1:]]
    groups: list[list[WeightedToken]] = []
    for word in (w for w in words if w):
        if word.startswith(EMBEDDING_PREFIX) and embedding_dir is not None:
            name, leftover = _split_embedding_name(word[len(EMBEDDING_PREFIX) :].strip("\n"))
            vectors = load_embedding(name, embedding_dir, width)
            if vectors is None and name.strip(",") != name:
                stripped = name.strip(",")
                vectors = load_embedding(stripped, embedding_dir, width)
                leftover = f"{name[len(stripped):]} {leftover}"
            if vectors is None:
                log.warning("embedding:%s does not exist, ignoring it", name)
            else:
                groups.append([(v, weight) for v in vectors])
            if not leftover:
                continue
            word = leftover
        groups.append([(t, weight) for t in tokenizer.encode(word)])
    return groups


def tokenize_prompt(
    text: str,
    tokenizer: CLIPTokenizer | None = None,
    embedding_dir: Path | str | None = None,
    width: int = 768,
    pad_token: int = END_TOKEN,
    chunk_length: int = CHUNK_LENGTH,
) -> list[list[WeightedToken]]:
    """Chunks of 77 (token, weight) pairs: start token, up to 75 tokens, end token, padding.

    ``chunk_length`` is the encoder's position count (248 for Long-CLIP files).

    A piece of fewer than 8 tokens that does not fit into the current chunk moves
    whole to the next one; a longer piece is cut at the chunk boundary. CLIP-L
    pads with the end token, OpenCLIP-G with 0.
    """
    tokenizer = tokenizer or default_tokenizer()
    groups: list[list[WeightedToken]] = []
    for piece, weight in parse_weights(text):
        groups.extend(_piece_tokens(piece, weight, tokenizer, embedding_dir, width))

    room = chunk_length - 1
    chunks: list[list[WeightedToken]] = []
    chunk: list[WeightedToken] = [(START_TOKEN, 1.0)]
    chunks.append(chunk)
    for group in groups:
        splittable = len(group) >= MAX_UNSPLIT_PIECE
        while group:
            if len(chunk) + len(group) <= room:
                chunk.extend(group)
                break
            free = room - len(chunk)
            if splittable:
                chunk.extend(group[:free])
                group = group[free:]
                chunk.append((END_TOKEN, 1.0))
            else:
                chunk.append((END_TOKEN, 1.0))
                chunk.extend([(pad_token, 1.0)] * free)
            chunk = [(START_TOKEN, 1.0)]
            chunks.append(chunk)
    chunk.append((END_TOKEN, 1.0))
    chunk.extend([(pad_token, 1.0)] * (chunk_length - len(chunk)))
    return chunks
