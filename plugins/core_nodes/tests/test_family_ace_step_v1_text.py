"""ACE-Step 1.0's text side: lyrics ids and token lists against ComfyUI's, umt5-base against transformers.

``data/ace_step_v1/lyrics_reference.json`` is what ComfyUI 0.3.64 produced
(``record_text.py`` beside it): the lyrics tokenizer's ids, the weighted
lyrics lists and both lists of ``AceT5Tokenizer`` with the small SentencePiece
model stored there. The umt5 of ``_files_ace_step_v1_text`` is checked against
transformers' ``UMT5EncoderModel`` (a test-only oracle) with the same weights
and attention mask, in fp32.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from _files_ace_step_v1_text import LAYERS, PREFIX, SPIECE_KEY, text_state_dict, umt5_config, umt5_state_dict
from _oracle import close

from comfy_kernel_core_nodes.components.t5 import T5Encoder
from comfy_kernel_core_nodes.families.ace_step_v1.lyrics import lyrics_tokens
from comfy_kernel_core_nodes.families.ace_step_v1.text import (
    AceV1Tokenizer,
    ace_v1_clip,
    ace_v1_text_prefix,
    encode_ace_v1,
)
from comfy_kernel_core_nodes.model import ops
from comfy_kernel_core_nodes.model.files import tensor_shapes

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REFERENCE = json.loads((Path(__file__).parent / "data" / "ace_step_v1" / "lyrics_reference.json")
                       .read_text(encoding="utf-8"))


def _lists(value):
    """Token lists with tuples as lists, as the JSON has them."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _tokenizer() -> AceV1Tokenizer:
    return AceV1Tokenizer(base64.b64decode(REFERENCE["spiece_model"]))


@pytest.mark.parametrize("case", REFERENCE["voicebpe"], ids=lambda c: repr(c["text"][:24]))
def test_lyrics_ids_match_comfyui(case):
    assert lyrics_tokens(case["text"]) == case["ids"]


@pytest.mark.parametrize("case", REFERENCE["lyrics_tokenizer"], ids=lambda c: repr(c["text"][:24]))
def test_weighted_lyrics_match_comfyui(case):
    out = _tokenizer().tokenize_with_weights("", lyrics=case["text"], **case["kwargs"])
    assert _lists(out["lyrics"]) == case["tokens"]


@pytest.mark.parametrize("case", REFERENCE["ace_tokenizer"], ids=lambda c: repr(c["tags"][:24]))
def test_token_lists_match_comfyui(case):
    out = _tokenizer().tokenize_with_weights(case["tags"], case["return_word_ids"], lyrics=case["lyrics"],
                                             **case["kwargs"])
    assert list(out) == ["lyrics", "umt5base"]
    assert _lists(out) == case["tokens"]


def _models(seed: int = 5, stored: torch.dtype = torch.float32):
    """Ours and transformers' umt5 with the helper's weights (rounded to ``stored``, computing in fp32)."""
    transformers = pytest.importorskip("transformers")
    cfg = umt5_config()
    sd = {k: v.to(stored).float() for k, v in umt5_state_dict(seed).items()}
    ours = T5Encoder(cfg, ops.plain).eval()
    ours.load_state_dict(sd)
    ref = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.width, d_kv=64, d_ff=cfg.ff_width, num_layers=cfg.layers,
        num_heads=cfg.heads, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
        relative_attention_max_distance=128)).eval()
    ref.load_state_dict({**sd, "encoder.embed_tokens.weight": sd["shared.weight"]})
    return ours, ref


def _ids(tokens: list) -> list[int]:
    return [int(pair[0]) for pair in tokens[0]]


def test_umt5_states_match_transformers_with_the_mask():
    ours, ref = _models()
    tokens = _tokenizer().tokenize_with_weights("rock, electric guitar, drums", lyrics="[verse]\nhello",
                                                tokenizer_options={"umt5base_min_padding": 6})
    ids = torch.tensor([_ids(tokens["umt5base"])])
    mask = (torch.arange(ids.shape[1]) <= _ids(tokens["umt5base"]).index(1)).long()[None]
    assert ids[0, -1] == 0 and mask[0, -1] == 0
    cond, pooled, extra = encode_ace_v1(ours, tokens, {})
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        unmasked = ref(input_ids=ids).last_hidden_state
        hidden = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert cond.dtype == torch.float32 and cond.shape == (1, ids.shape[1], 128) and pooled is None
    close(cond, expected)  # the padding's states too: masked as keys only, not zeroed
    assert (cond[0, -1] - unmasked[0, -1]).abs().max() > 1e-3
    assert extra["conditioning_lyrics"].dtype == torch.long
    assert extra["conditioning_lyrics"].tolist() == [_ids(tokens["lyrics"])]
    penultimate, _, _ = encode_ace_v1(ours, tokens, {"layer": -2})
    with torch.no_grad():
        close(penultimate, ref.encoder.final_layer_norm(hidden[LAYERS - 1]))
    beyond, _, _ = encode_ace_v1(ours, tokens, {"layer": -(LAYERS + 1)})
    close(beyond, expected)


def test_weighted_tags_interpolate_against_the_empty_prompt():
    ours, ref = _models()
    tokens = _tokenizer().tokenize_with_weights("pop, (synth:1.5), drums")
    pairs = tokens["umt5base"][0]
    ids = torch.tensor([[t for t, _ in pairs]])
    empty = torch.tensor([[1] + [0] * (ids.shape[1] - 1)])
    with torch.no_grad():
        z = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        z_empty = ref(input_ids=empty, attention_mask=(empty == 1).long()).last_hidden_state[0]
    weights = torch.tensor([w for _, w in pairs])[:, None]
    assert (weights != 1).any()
    cond, _, _ = encode_ace_v1(ours, tokens, {})
    close(cond[0], (z - z_empty) * weights + z_empty)


def test_checkpoint_clip_encodes_tags_and_passes_lyrics(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "ace_text.safetensors"
    save_file({**text_state_dict(7), "model.diffusion_model.proj_in.weight": torch.zeros(2, 2)}, str(path))
    shapes = tensor_shapes(str(path))
    prefix = ace_v1_text_prefix(shapes)
    assert prefix == PREFIX
    clip = ace_v1_clip(str(path), prefix, shapes)
    lyrics = "[verse]\nWe got 2 hearts & 1 song\n\n[chorus]\nla la"
    tokens = clip.tokenize("rock, drums", lyrics=lyrics)
    assert tokens["lyrics"] == [[(t, 1.0) for t in lyrics_tokens(lyrics)]]
    assert tokens["umt5base"][0][-1] == (1, 1.0)
    [[cond, extra]] = clip.encode_from_tokens_scheduled(tokens)
    assert extra["pooled_output"] is None
    assert extra["conditioning_lyrics"].tolist() == [lyrics_tokens(lyrics)]
    from comfy_kernel_core_nodes.model.devices import compute_dtype, storage_dtype

    _, ref = _models(7, stored=storage_dtype("text_encoder"))  # fp16 weights on the CPU, computing in fp32
    ids = torch.tensor([_ids(tokens["umt5base"])])
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    close(cond, expected, rtol=1e-4 if compute_dtype("text_encoder") == torch.float32 else 2e-2)


def test_detection_and_a_checkpoint_without_its_tokenizer(tmp_path):
    from safetensors.torch import save_file

    from comfy_kernel_core_nodes.model.loading import UnsupportedModel

    sd = text_state_dict(7)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert ace_v1_text_prefix(shapes) == PREFIX
    bare = {k[len("text_encoders."):]: v for k, v in shapes.items()}
    assert ace_v1_text_prefix(bare) == "umt5base.transformer."
    assert ace_v1_text_prefix({k.replace("umt5base", "t5xxl"): v for k, v in shapes.items()}) is None
    del sd[SPIECE_KEY]
    path = str(tmp_path / "no_spiece.safetensors")
    save_file(sd, path)
    with pytest.raises(UnsupportedModel, match="spiece_model"):
        ace_v1_clip(path, PREFIX, tensor_shapes(path))
