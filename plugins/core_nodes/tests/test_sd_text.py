"""Tokenizer, prompt weighting and text encoder against ComfyUI's captured outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comfy_kernel_core_nodes.components.clip.prompt import parse_weights, tokenize_prompt
from comfy_kernel_core_nodes.components.clip.text_model import encode_chunks
from comfy_kernel_core_nodes.components.clip.tokenizer import END_TOKEN, START_TOKEN, default_tokenizer

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TEXT_WORKFLOWS = ["txt2img", "prompt_weighting", "clip_skip2"]
SIDES = ["positive", "negative"]


def _tokens_ref(reference_outputs, workflow, side):
    return json.loads((reference_outputs / workflow / f"tokens_{side}.json").read_text())


def test_bpe_basics():
    tok = default_tokenizer()
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tok.encode("  A   PHOTO\tof\na  cat ") == tok.encode("a photo of a cat")
    assert tok.decode(tok.encode("a red ball, blue")) == "a red ball , blue"


def test_weight_syntax():
    assert parse_weights("a (b) ((c)) (d:1.5) [e] \\(f\\)") == [
        ("a ", 1.0),
        ("b", pytest.approx(1.1)),
        (" ", 1.0),
        ("c", pytest.approx(1.21)),
        (" ", 1.0),
        ("d", 1.5),
        (" [e] (f)", 1.0),
    ]
    assert parse_weights("((x:0.5) y)") == [("x", 0.5), (" y", pytest.approx(1.1))]


def test_chunking_moves_short_pieces_and_splits_long_ones():
    filler = " ".join(["cat"] * 73)
    chunks = tokenize_prompt(filler + ", (big red ball:1.2)")
    assert [len(c) for c in chunks] == [77, 77]
    ball = [(t, 1.2) for t in default_tokenizer().encode("big red ball")]
    assert chunks[0][75:] == [(END_TOKEN, 1.0)] * 2
    assert chunks[1][:4] == [(START_TOKEN, 1.0), *ball] and chunks[1][4] == (END_TOKEN, 1.0)
    long_piece = " ".join(["dog"] * 10)
    chunks = tokenize_prompt(filler + ", (" + long_piece + ":0.9)")
    dog = default_tokenizer().encode("dog")[0]
    assert chunks[0][75] == (dog, 0.9) and chunks[0][76][0] == END_TOKEN
    assert sum(1 for c in chunks for t, w in c if w == 0.9) == 10


@pytest.mark.parametrize("workflow", TEXT_WORKFLOWS)
@pytest.mark.parametrize("side", SIDES)
def test_tokens_match_reference(reference_outputs, workflow, side):
    ref = _tokens_ref(reference_outputs, workflow, side)
    got = [[[t, w] for t, w in chunk] for chunk in tokenize_prompt(ref["text"])]
    assert got == ref["tokens"]["l"]


@pytest.mark.parametrize("workflow", TEXT_WORKFLOWS)
def test_conditioning_matches_reference(reference_outputs, sd15_tiny_clip, workflow):
    for side in SIDES:
        ref = _tokens_ref(reference_outputs, workflow, side)
        cond, pooled = encode_chunks(sd15_tiny_clip, tokenize_prompt(ref["text"]), ref["layer_idx"])
        cond_ref = np.load(reference_outputs / workflow / f"cond_{side}.npy")
        pooled_ref = np.load(reference_outputs / workflow / f"cond_{side}_pooled.npy")
        assert cond.dtype == torch.float32 and cond.shape == cond_ref.shape
        assert np.abs(cond.numpy() - cond_ref).max() <= 1e-5
        assert np.abs(pooled.numpy() - pooled_ref).max() <= 1e-5


def test_textual_inversion_embedding(tmp_path, sd15_tiny_clip):
    from safetensors.torch import save_file

    vectors = torch.randn(2, 768) * 0.02
    save_file({"emb_params": vectors}, str(tmp_path / "mystyle.safetensors"))
    chunks = tokenize_prompt("a cat embedding:mystyle, red", embedding_dir=tmp_path)
    tokens = [t for t, _ in chunks[0]]
    assert torch.equal(tokens[3], vectors[0]) and torch.equal(tokens[4], vectors[1])
    assert tokens[5:8] == [267, 736, END_TOKEN]
    cond, _ = encode_chunks(sd15_tiny_clip, chunks)
    assert cond.shape == (1, 77, 768) and torch.isfinite(cond).all()


def test_encode_prompt_with_clip_skip(reference_outputs, sd15_tiny_clip):
    from comfy_kernel_core_nodes.components.clip.text_model import encode_prompt

    cond, pooled = encode_prompt(sd15_tiny_clip, "a photo of a cat", layer_idx=-2)
    ref = np.load(reference_outputs / "clip_skip2" / "cond_positive.npy")
    assert np.abs(cond.numpy() - ref).max() <= 1e-5
    long_cond, _ = encode_prompt(sd15_tiny_clip, "cat " * 100)
    assert long_cond.shape == (1, 154, 768)
