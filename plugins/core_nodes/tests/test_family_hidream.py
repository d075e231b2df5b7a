"""HiDream: the transformer against diffusers, Llama 3.1 against transformers, detection of its files, the text side.

diffusers, transformers and tiktoken are test-only oracles (the ``test`` extra).
Forward passes run reduced configurations (see _hidream.py) in fp32, to 1e-4
relative; files are random weights in ComfyUI's key layouts.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest
import torch
from _flux import clip_l_state_dict, t5_state_dict
from _hidream import (
    WIDTH,
    diffusers_transformer,
    llama_config,
    llama_state_dict,
    transformer_layout,
    transformer_state_dict,
)
from _oracle import close
from _random_weights import write

from comfy_kernel_core_nodes.components.llm import llama3_tokenizer as tok
from comfy_kernel_core_nodes.components.llm.decoder import DecoderLM
from comfy_kernel_core_nodes.families.hidream.detect import llama3_prefix
from comfy_kernel_core_nodes.families.hidream.text import HiDreamTokenizer, llama_mask
from comfy_kernel_core_nodes.families.hidream.transformer import HiDreamTransformer
from comfy_kernel_core_nodes.model import detection
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_clip, load_diffusion_model, model_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from llama3_tokenizer_data import byte_alphabet  # noqa: E402

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _inputs(seed: int = 1, batch: int = 1, tokens: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(batch, 16, 8, 8, generator=g), "t": torch.tensor([700.0, 250.0][:batch]),
            "pooled": torch.randn(batch, 2048, generator=g), "t5": torch.randn(batch, 16, WIDTH, generator=g),
            "llama": torch.randn(batch, 4, tokens, WIDTH, generator=g)}


# -- the transformer ----------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2])
def test_transformer_matches_diffusers(batch):
    layout = transformer_layout()
    sd = transformer_state_dict(layout)
    ours = HiDreamTransformer(layout).eval()
    ours.load_state_dict(sd)
    ref = diffusers_transformer(layout, sd)
    i = _inputs(batch=batch)
    with torch.no_grad():
        out = ours(i["x"], i["t"], y=i["pooled"], context=i["t5"], encoder_hidden_states_llama3=i["llama"])
        expected = ref(i["x"], i["t"], encoder_hidden_states_t5=i["t5"],
                       encoder_hidden_states_llama3=i["llama"].movedim(1, 0), pooled_embeds=i["pooled"]).sample
    assert out.shape == i["x"].shape
    close(out, -expected)  # ComfyUI's network returns the negated velocity; diffusers' pipeline negates it after


def test_edit_image_latent_goes_beside_the_noise():
    """E1: the input image's latent is appended along the width and the output cut back to the noise's width.

    Noise and image are 8x4 so that together they are square: diffusers runs non-square latents padded
    to its maximum sequence with masked keys, which ComfyUI's network never does.
    """
    layout = transformer_layout()
    sd = transformer_state_dict(layout, seed=2)
    ours = HiDreamTransformer(layout).eval()
    ours.load_state_dict(sd)
    ref = diffusers_transformer(layout, sd)
    i = _inputs(seed=3)
    i["x"] = i["x"][..., :4]
    image = torch.randn(1, 16, 8, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = ours(i["x"], i["t"], y=i["pooled"], context=i["t5"], encoder_hidden_states_llama3=i["llama"],
                   image_cond=image)
        plain = ours(i["x"], i["t"], y=i["pooled"], context=i["t5"], encoder_hidden_states_llama3=i["llama"])
        expected = ref(torch.cat([i["x"], image], dim=-1), i["t"], encoder_hidden_states_t5=i["t5"],
                       encoder_hidden_states_llama3=i["llama"].movedim(1, 0), pooled_embeds=i["pooled"]).sample
    assert out.shape == i["x"].shape
    close(out, -expected[..., :4])
    assert (out - plain).abs().max() > 1e-3


def test_transformer_file_is_detected_with_every_key(tmp_path):
    layout = transformer_layout()
    path = write(tmp_path / "hidream_i1_dev_bf16.safetensors", transformer_state_dict(layout, dtype=torch.bfloat16))
    config, prefix = model_config(str(path))
    assert type(config).__name__ == "HiDream" and prefix == ""
    unet = config.unet_config
    assert (unet["num_layers"], unet["num_single_layers"], unet["num_attention_heads"]) == (2, 2, 2)
    assert unet["caption_channels"] == [WIDTH, WIDTH] and unet["num_routed_experts"] == 4
    assert unet["in_channels"] == 16 and unet["text_emb_dim"] == 2048
    patcher = load_diffusion_model(str(path))
    with torch.device("meta"):
        expected = set(HiDreamTransformer(layout).state_dict())
    assert set(patcher.model.weights.keys) == expected
    assert set(patcher.model.weights.read("cpu")) == expected
    assert patcher.model.model_sampling.multiplier == 1000 and patcher.model.model_sampling.shift == 1.0
    assert patcher.model.latent_format.latent_channels == 16


def test_full_size_layout_gives_comfyuis_configuration():
    """The released layout (16 + 32 blocks, 20 heads, 4096-wide text) read from shapes alone."""
    from comfy_kernel_core_nodes.families.hidream.transformer import HiDreamConfig

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in HiDreamTransformer(HiDreamConfig()).state_dict().items()}
    config = detection.model_config_from(shapes, "")
    unet = config.unet_config
    assert (unet["num_layers"], unet["num_single_layers"], unet["num_attention_heads"]) == (16, 32, 20)
    assert unet["caption_channels"] == [4096, 4096] and unet["out_channels"] == 16
    assert len(shapes) == len([k for k in shapes if k.startswith(("double", "single", "caption", "t_", "p_", "x_",
                                                                  "final"))])


# -- Llama 3.1 ----------------------------------------------------------------------------------

def test_llama_states_match_transformers():
    transformers = pytest.importorskip("transformers")
    sd = {k: v.float() for k, v in llama_state_dict().items()}
    ours = DecoderLM(llama_config()).eval()
    ours.load_state_dict(sd)
    config = transformers.LlamaConfig(vocab_size=128256, hidden_size=WIDTH, intermediate_size=512,
                                      num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                                      head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0)
    ref = transformers.LlamaModel(config).eval()
    ref.load_state_dict({k[len("model."):]: v for k, v in sd.items()})
    ids = [tok.BEGIN_OF_TEXT, 9906, 1917, 11, 264, 2697] + [tok.EOT] * 4
    mask = torch.tensor([llama_mask(ids)])
    assert mask.tolist() == [[1] * 6 + [0] * 4]
    with torch.no_grad():
        ours_states = ours.all_states(ours.embed(torch.tensor([ids])), attention_mask=mask)
        hf = ref(input_ids=torch.tensor([ids]), attention_mask=mask, output_hidden_states=True)
    # embeddings, each layer's output, the last one normed: Hugging Face's hidden_states
    assert ours_states.shape == (1, 4, len(ids), WIDTH)
    close(ours_states, torch.stack(hf.hidden_states, dim=1))


def test_llama_tokenizer_agrees_with_tiktoken_on_the_shipped_ranks():
    """The merge list derived from Meta's ranks tokenizes as rank-ordered merging (tiktoken) does."""
    tiktoken = pytest.importorskip("tiktoken")
    with gzip.open(tok.DATA / "vocab.json.gz", "rt", encoding="utf-8") as f:
        vocab = json.load(f)
    from comfy_kernel_core_nodes.components.llm.llama3_tokenizer import special_tokens

    to_byte = {c: b for b, c in byte_alphabet().items()}
    ranks = {bytes(to_byte[c] for c in text): rank for text, rank in vocab.items()}
    reference = tiktoken.Encoding("llama3", pat_str=tok.SPLIT_PATTERN, mergeable_ranks=ranks,
                                  special_tokens=special_tokens())
    texts = ["Hello world", "A photograph of an albino woman, 12345 numbers!!  \n\n spaces\ttabs",
             "naïve café 日本語のテキスト 🎉", "<|eot_id|> then <|start_header_id|>", "don't WON'T it's", ".:.:.:"]
    g = torch.Generator().manual_seed(0)
    alphabet = "abcdefghij ,.;:!?'\"()0123456789ÄöüßéñЖあア中文🙂\n\t"
    for _ in range(300):
        n = int(torch.randint(1, 60, (1,), generator=g))
        texts.append("".join(alphabet[int(i)] for i in torch.randint(0, len(alphabet), (n,), generator=g)))
    llama = tok.llama3_tokenizer()
    for text in texts:
        assert llama.encode(text) == reference.encode(text, allowed_special="all"), text
    assert llama.encode("Hello world") == [9906, 1917]
    assert llama.decode(llama.encode(texts[2])) == texts[2]


def test_vocabulary_holds_every_base_rank_once():
    with gzip.open(tok.DATA / "vocab.json.gz", "rt", encoding="utf-8") as f:
        vocab = json.load(f)
    assert len(vocab) == tok.BASE_TOKENS and sorted(vocab.values()) == list(range(tok.BASE_TOKENS))
    assert tok.llama3_tokenizer().decode([tok.BEGIN_OF_TEXT, tok.EOT]) == "<|begin_of_text|><|eot_id|>"


# -- the text encoders --------------------------------------------------------------------------

def test_tokenizer_pads_t5_and_llama_to_128():
    tokens = HiDreamTokenizer().tokenize_with_weights("a red (fox:1.2)")
    assert len(tokens["t5xxl"]) == 1 and len(tokens["t5xxl"][0]) == 128
    llama = tokens["llama"][0]
    assert len(llama) == 128 and llama[0] == (tok.BEGIN_OF_TEXT, 1.0) and llama[-1] == (tok.EOT, 1.0)
    ids = [t for t, _ in llama]
    assert ids[1:5] == tok.llama3_tokenizer().encode("a red ") + tok.llama3_tokenizer().encode("fox")
    assert llama[3][1] == 1.0 and llama[4][1] == pytest.approx(1.2)
    assert len(tokens["l"][0]) == 77 and len(tokens["g"][0]) == 77 and tokens["g"][0][-1][0] == 0
    long = HiDreamTokenizer().tokenize_with_weights("word " * 200)
    assert len(long["t5xxl"][0]) == 128 and long["t5xxl"][0][-1][0] == 1  # cut to 128, T5's end token last
    assert len(long["llama"][0]) == 1 + 200 + 1  # start, "word" and 199 " word", the trailing space; no cut


def test_four_files_encode_to_hidreams_inputs(tmp_path):
    files = {
        "llama": write(tmp_path / "llama_3.1_8b_instruct_fp8_scaled.safetensors", llama_state_dict()),
        "t5": write(tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors", t5_state_dict()),
        "clip_l": write(tmp_path / "clip_l_hidream.safetensors",
                        {**clip_l_state_dict(), "text_projection.weight": torch.eye(768, dtype=torch.float16)}),
    }
    assert llama3_prefix(tensor_shapes(str(files["llama"]))) == ""
    assert detection.text_encoder_kind(tensor_shapes(str(files["llama"])))[0].name == "llama3"
    clip = load_clip([str(p) for p in files.values()], "hidream")
    keys = clip.cond_stage_model.state_dict_keys()
    assert "llama.transformer.model.layers.2.mlp.down_proj.weight" in keys
    assert "clip_l.transformer.text_model.text_projection.weight" in keys
    tokens = clip.tokenize("a red fox")
    cond = clip.encode_from_tokens_scheduled(tokens)[0]
    assert cond[0].shape == (1, 128, WIDTH)
    assert cond[1]["pooled_output"].shape == (1, 2048)
    assert cond[1]["pooled_output"][:, 768:].abs().max() == 0  # no CLIP-G: zeros in its half
    states = cond[1]["conditioning_llama3"]
    assert states.shape == (1, 3, 128, WIDTH) and torch.isfinite(states).all()
    with pytest.raises(ValueError, match="one llama"):
        load_clip([str(files["llama"]), str(files["llama"])], "hidream")


def test_lora_names_of_simpletuner_reach_the_transformer(tmp_path):
    """SimpleTuner's ``transformer.<layer>`` LoRAs (and their LyCORIS spelling) patch the named layers."""
    from comfy_kernel_core_nodes.model.lora import load_lora, model_lora_keys_unet

    path = write(tmp_path / "hidream.safetensors", transformer_state_dict(dtype=torch.bfloat16))
    patcher = load_diffusion_model(str(path))
    key_map = model_lora_keys_unet(patcher.model)
    target = "diffusion_model.double_stream_blocks.0.block.attn1.to_q.weight"
    assert key_map["transformer.double_stream_blocks.0.block.attn1.to_q"] == target
    assert key_map["lycoris_single_stream_blocks_1_block_ff_i_experts_3_w2"] == \
        "diffusion_model.single_stream_blocks.1.block.ff_i.experts.3.w2.weight"
    g = torch.Generator().manual_seed(3)
    lora = {"transformer.double_stream_blocks.0.block.attn1.to_q.lora_A.weight": torch.randn(4, 256, generator=g),
            "transformer.double_stream_blocks.0.block.attn1.to_q.lora_B.weight": torch.randn(256, 4, generator=g)}
    patches = load_lora(lora, key_map)
    assert set(patches) == {target}


def test_scaled_fp8_file_runs_as_its_dequantized_weights(tmp_path):
    """Scaled fp8 (weight / scale stored, ``scale_weight`` beside it) reaches every layer, the expert gate too."""
    from _random_weights import fp8_state_dict

    layout = transformer_layout()
    stored = fp8_state_dict(transformer_state_dict(layout, seed=6, dtype=torch.bfloat16), scaled=True)
    path = write(tmp_path / "hidream_scaled.safetensors", stored)
    net = load_diffusion_model(str(path)).model.diffusion_model
    dequantized = {}
    for key, value in stored.items():
        if key.endswith("scale_weight") or key == "scaled_fp8":
            continue
        scale = stored.get(key[: -len("weight")] + "scale_weight")
        dequantized[key] = value.float() * scale.float() if scale is not None else value.float()
    ref = HiDreamTransformer(layout).eval()
    ref.load_state_dict(dequantized)
    i = _inputs(seed=7)
    with torch.no_grad():
        out = net(i["x"], i["t"], y=i["pooled"], context=i["t5"], encoder_hidden_states_llama3=i["llama"])
        expected = ref(i["x"], i["t"], y=i["pooled"], context=i["t5"], encoder_hidden_states_llama3=i["llama"])
    close(out, expected, rtol=1e-3)


def test_llama_conditioning_keeps_every_token_and_weights_move_whole_states():
    """ComfyUI's conditioning_llama3: the layer outputs for every token (start token included); a weight on
    token j moves layer state j as a whole away from the empty prompt's (its weighting applied to the stack)."""
    from comfy_kernel_core_nodes.families.hidream.text import encode_llama, tokenize_llama

    model = DecoderLM(llama_config()).eval()
    model.load_state_dict({k: v.float() for k, v in llama_state_dict().items()})
    pairs = tokenize_llama("a red fox", min_length=8)[0]
    ids = [t for t, _ in pairs]
    with torch.no_grad():
        states = model.all_states(model.embed(torch.tensor([ids])), torch.tensor([llama_mask(ids)]))
        empty_ids = [tok.BEGIN_OF_TEXT] + [tok.EOT] * (len(ids) - 1)
        empty = model.all_states(model.embed(torch.tensor([empty_ids])), torch.tensor([llama_mask(empty_ids)]))
    plain = encode_llama(model, pairs)
    assert plain.shape == (1, 3, 8, WIDTH)
    close(plain, states[:, 1:])
    weighted = [(t, 1.5 if j == 2 else 1.0) for j, (t, _) in enumerate(pairs)]
    out = encode_llama(model, weighted)
    close(out[:, 1], (states[:, 2] - empty[:, 2]) * 1.5 + empty[:, 2])
    close(out[:, [0, 2]], states[:, [1, 3]])


def test_conditioning_without_llama_states_is_refused_by_name():
    layout = transformer_layout()
    net = HiDreamTransformer(layout)
    net.load_state_dict(transformer_state_dict(layout))
    i = _inputs()
    with pytest.raises(ValueError, match="QuadrupleCLIPLoader"):
        net(i["x"], i["t"], y=i["pooled"], context=i["t5"])
