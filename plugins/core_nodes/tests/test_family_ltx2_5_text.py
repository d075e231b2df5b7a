"""LTX-2.5's text encoder: Gemma 4 with the projection in one file, read by CLIPLoader type ``ltxv``.

The conditioning is checked against transformers' Gemma 4 (``Gemma4UnifiedTextModel``,
test-only) on the same random weights, followed by diffusers' per-token RMS
norm and the file's two projections, as LTX-2.5's pipeline computes it.
"""

from __future__ import annotations

import json

import pytest
import torch
from _files_ltx2_5 import GEMMA4, GEMMA4_HF, text_encoder_file, tokenizer_json
from _oracle import close

from comfy_kernel_core_nodes.families.ltx2 import text
from comfy_kernel_core_nodes.families.ltx2.text_nodes import enhancer_prompt
from comfy_kernel_core_nodes.model.loading import load_clip

pytestmark = pytest.mark.usefixtures("single_torch_thread")
PROMPT = "a cat sits on a red chair in the garden"


@pytest.fixture(scope="module")
def clip():
    return load_clip([str(text_encoder_file())], "ltxv")


def _oracle_states(ids: list[int]) -> torch.Tensor:
    from safetensors.torch import load_file
    from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedTextConfig
    from transformers.models.gemma4_unified.modeling_gemma4_unified import Gemma4UnifiedTextModel

    model = Gemma4UnifiedTextModel(Gemma4UnifiedTextConfig(**GEMMA4_HF["text_config"])).eval()
    sd = {k[len("model."):]: v.float() for k, v in load_file(str(text_encoder_file())).items()
          if k.startswith("model.")}
    model.load_state_dict(sd, strict=False)
    missing = {k for k in model.state_dict() if k not in sd}
    assert not missing, missing
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=-1)  # [1, L, 256, 8 states]


def test_tokens_are_the_start_token_and_the_files_tokenizer_padded_left(clip):
    from tokenizers import Tokenizer

    pairs = clip.tokenize(PROMPT)["gemma4"][0]
    ids = [t for t, _ in text.prompt_pairs(pairs)]
    assert len(pairs) == 1024 and all(t == 0 for t, _ in pairs[:1024 - len(ids)])
    assert ids == [2] + Tokenizer.from_str(tokenizer_json()).encode(PROMPT, add_special_tokens=False).ids
    assert clip.tokenizer.decode(ids) == PROMPT


def test_conditioning_matches_transformers_and_the_ltx25_projection(clip):
    from diffusers.pipelines.ltx2.connectors import per_token_rms_norm
    from safetensors.torch import load_file

    out = clip.encode_from_tokens(clip.tokenize(PROMPT), return_dict=True)
    assert out["unprocessed_ltxav_embeds"] is True  # LTX-2.5's connectors are the diffusion model's
    ids = [t for t, _ in text.prompt_pairs(clip.tokenize(PROMPT)["gemma4"][0])]
    states = _oracle_states(ids)
    assert states.shape[-1] == GEMMA4.num_layers + 1
    x = per_token_rms_norm(states).flatten(2)
    sd = {k: v.float() for k, v in load_file(str(text_encoder_file())).items()}
    expected = [torch.nn.functional.linear(x * (w / GEMMA4.hidden_size) ** 0.5,
                                           sd[f"text_embedding_projection.{name}_aggregate_embed.weight"],
                                           sd[f"text_embedding_projection.{name}_aggregate_embed.bias"])
                for name, w in (("video", 128), ("audio", 64))]
    close(out["cond"], torch.cat(expected, dim=-1), 1e-3)


def test_the_file_carries_its_config_and_the_shapes_agree():
    from safetensors import safe_open

    from comfy_kernel_core_nodes.components.llm.gemma4 import Gemma4Config, config_from_shapes
    from comfy_kernel_core_nodes.model.files import tensor_shapes

    with safe_open(str(text_encoder_file()), framework="pt") as f:
        carried = Gemma4Config.from_hf(json.loads(f.metadata()["gemma_config"]))
    assert carried == GEMMA4
    from_shapes = config_from_shapes(tensor_shapes(str(text_encoder_file())))
    assert from_shapes.layer_types == GEMMA4.layer_types and from_shapes.kv_shared == GEMMA4.kv_shared
    assert from_shapes.k_eq_v and from_shapes.global_head_dim == 128


def test_enhancer_prompt_in_gemma4_turns():
    text = enhancer_prompt("a dog", False, "Be brief.", chat="gemma4")
    assert text == ("<|turn>system\nBe brief.<turn|>\n<|turn>user\nUser Raw Input Prompt: a dog.<turn|>\n"
                    "<|turn>model\n")
    assert enhancer_prompt("a dog", False, "Be brief.").startswith("<start_of_turn>system\n")


def test_turn_markers_are_single_tokens(clip):
    pairs = clip.tokenize(enhancer_prompt("a dog", False, "Be brief.", chat="gemma4"), min_length=1)["gemma4"][0]
    ids = [t for t, _ in pairs]
    assert ids[:2] == [2, 105] and ids.count(105) == 3 and ids.count(106) == 2


def test_int8_convrot_file_encodes_as_its_dequantized_weights(tmp_path):
    """The released file is ``comfy-int8-convrot``: every language-model matrix int8 after a Hadamard rotation
    by groups of 64. It encodes as the same file with those weights dequantized, up to the float16 the
    dequantized copy is stored in on the CPU (the int8 weights are decoded straight to float32)."""
    from _quant_files import dequantize_layers, quantize_layers
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source = str(text_encoder_file())
    with safe_open(source, framework="pt") as f:
        metadata = f.metadata()
    sd = load_file(source)
    layers = {k[: -len(".weight")]: {"format": "int8", "convrot": 64} for k, v in sd.items()
              if k.startswith("model.layers.") and v.ndim == 2 and v.shape[1] % 64 == 0}
    assert len(layers) > 20
    quantized = quantize_layers(sd, layers)
    save_file(quantized, str(tmp_path / "int8.safetensors"), metadata=metadata)
    plain = {k: v.contiguous() for k, v in dequantize_layers(quantized, {k: tuple(v.shape) for k, v in sd.items()}).items()}
    save_file(plain, str(tmp_path / "dequantized.safetensors"), metadata=metadata)
    conds = []
    for path in (tmp_path / "int8.safetensors", tmp_path / "dequantized.safetensors", source):
        clip = load_clip([str(path)], "ltxv")
        conds.append(clip.encode_from_tokens(clip.tokenize(PROMPT)))

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    # this random Gemma is sensitive: int8 moves it 18 % from the bf16 file, float16 storage 0.7 %
    assert rel(conds[0], conds[1]) < 0.02 and rel(conds[0], conds[2]) > 0.1
