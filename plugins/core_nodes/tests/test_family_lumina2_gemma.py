"""Lumina-Image 2.0's Gemma 2 2B under CLIPLoader type ``lumina2``, on a random-weight file in ComfyUI's layout
(_files_lumina2.py). transformers' Gemma2Model is the test-only oracle."""

from __future__ import annotations

import pytest
import torch
from _files_lumina2 import gemma_file, small_config, spiece_model
from _random_weights import write

from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM
from comfy_kernel_core_nodes.families.lumina2.nodes import SYSTEM_PROMPT, CLIPTextEncodeLumina2
from comfy_kernel_core_nodes.model.loading import UnsupportedModel, load_clip
from comfy_kernel_core_nodes.nodes.conditioning import CLIPTextEncode

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

def oracle_hidden(ids: list[int]) -> tuple[torch.Tensor, ...]:
    from safetensors.torch import load_file

    c = small_config()
    config = transformers.Gemma2Config(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim, attn_implementation="eager")
    model = transformers.Gemma2Model(config).eval()
    sd = {k.removeprefix("model."): v.float() for k, v in load_file(str(gemma_file())).items() if k != "spiece_model"}
    model.load_state_dict(sd)
    with torch.no_grad():
        return model(torch.tensor([ids]), output_hidden_states=True).hidden_states


def test_gemma_file_is_detected_with_every_key():
    clip = load_clip([str(gemma_file())], "lumina2")
    with torch.device("meta"):
        expected = {"gemma2_2b.transformer." + k for k in DecoderLM(small_config()).state_dict()}
    assert set(clip.cond_stage_model.state_dict_keys()) == expected


def test_tokens_follow_comfyui():
    """The start token, then SentencePiece's pieces; weights parsed; nothing padded or ended."""
    import sentencepiece

    clip = load_clip([str(gemma_file())], "lumina2")
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece_model())
    tokens = clip.tokenize("a cat sits on a red chair")["gemma2_2b"][0]
    assert [t for t, _ in tokens] == [2] + pieces.encode("a cat sits on a red chair")
    weighted = clip.tokenize("a cat (red chair:1.5)")["gemma2_2b"][0]
    assert weighted[0] == (2, 1.0) and weighted[-1][1] == 1.5 and weighted[1][1] == 1.0


def test_conditioning_matches_transformers():
    """The conditioning is the hidden state entering the last layer, fp32 on the file's weights."""
    clip = load_clip([str(gemma_file())], "lumina2")
    tokens = clip.tokenize("a photograph of a mountain lake at sunrise, a small boat")
    ids = [t for t, _ in tokens["gemma2_2b"][0]]
    cond = clip.encode_from_tokens_scheduled(tokens)
    assert cond[0][0].dtype == torch.float32 and cond[0][0].shape == (1, len(ids), 2304)
    assert cond[0][1]["attention_mask"].tolist() == [[1] * len(ids)]
    expected = oracle_hidden(ids)[-2]
    err = (cond[0][0] - expected).abs().max().item()
    assert err <= 1e-4 * expected.abs().max().item(), err


def test_weighted_tokens_move_from_the_empty_prompt():
    clip = load_clip([str(gemma_file())], "lumina2")
    tokens = clip.tokenize("a cat (red chair:1.5)")
    pairs = tokens["gemma2_2b"][0]
    weighted = clip.encode_from_tokens_scheduled(tokens)[0][0][0]
    plain = clip.encode_from_tokens_scheduled({"gemma2_2b": [[(t, 1.0) for t, _ in pairs]]})[0][0][0]
    moved = torch.tensor([w != 1.0 for _, w in pairs])
    assert moved.any() and not moved.all()
    torch.testing.assert_close(weighted[~moved], plain[~moved])
    assert (weighted[moved] - plain[moved]).abs().max() > 1e-2


def test_nodes_encode_with_gemma():
    clip = load_clip([str(gemma_file())], "lumina2")
    (cond,) = CLIPTextEncode().encode(clip, "a cat sits on a red chair")
    n = len(clip.tokenize("a cat sits on a red chair")["gemma2_2b"][0])
    assert cond[0][0].shape == (1, n, 2304) and cond[0][1]["attention_mask"].shape == (1, n)
    lumina = CLIPTextEncodeLumina2.execute(clip, "a cat", "superior").args[0]
    prompt = f"{SYSTEM_PROMPT['superior']} <Prompt Start> a cat"
    assert lumina[0][0].shape == (1, len(clip.tokenize(prompt)["gemma2_2b"][0]), 2304)


def test_tokenizer_beside_the_file_or_a_clear_error(tmp_path):
    from safetensors.torch import load_file

    sd = {k: v for k, v in load_file(str(gemma_file())).items() if k != "spiece_model"}
    path = write(tmp_path / "gemma_2_2b.safetensors", sd)
    with pytest.raises(UnsupportedModel, match="spiece_model.*tokenizer.model"):
        load_clip([str(path)], "lumina2")
    (tmp_path / "tokenizer.model").write_bytes(spiece_model())
    clip = load_clip([str(path)], "lumina2")
    assert clip.tokenize("a cat")["gemma2_2b"][0][0] == (2, 1.0)


def test_checkpoint_carries_gemma():
    from _files_lumina2 import lumina2_checkpoint

    from comfy_kernel_core_nodes.model.loading import load_checkpoint

    patcher, clip, _ = load_checkpoint(str(lumina2_checkpoint()))
    assert type(patcher.model.model_config).__name__ == "Lumina2"
    assert clip is not None and "gemma2_2b.transformer.model.norm.weight" in clip.cond_stage_model.state_dict_keys()
    tokens = clip.tokenize("a red chair")
    assert clip.encode_from_tokens_scheduled(tokens)[0][0].shape == (1, len(tokens["gemma2_2b"][0]), 2304)
