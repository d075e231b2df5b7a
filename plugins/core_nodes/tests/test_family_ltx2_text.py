"""LTX-2's text side: Gemma 3 and the checkpoint's text head, the tokenizer, the loader and the prompt enhancer.

The conditioning is checked against test-only oracles on the same random
weights: transformers' Gemma 3 for the 8 hidden states and diffusers'
LTX2TextConnectors (split rotary, ComfyUI's 1e-5 q/k norm epsilon) for the
feature extractor and the two connectors. The nodes run through the server.
"""

from __future__ import annotations

import pytest
import torch
from _files_ltx2_text import GEMMA, HEAD, HEAD_23, STATES, gemma_file, ltx2_head_file, ltx23_head_file
from _files_qwen import place
from _oracle import close

from comfy_kernel_core_nodes.families.ltx2 import text, text_head
from comfy_kernel_core_nodes.families.ltx2.text_nodes import enhancer_prompt, system_prompt
from comfy_kernel_core_nodes.model.files import tensor_shapes
from comfy_kernel_core_nodes.model.loading import load_clip

pytestmark = pytest.mark.usefixtures("single_torch_thread")
PROMPT = "a cat sits on a red chair in the garden"


@pytest.fixture(scope="module")
def clip():
    return load_clip([str(gemma_file()), str(ltx2_head_file())], "ltxv")


def _gemma_weights() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(gemma_file())).items() if k.startswith("model.")}


def test_gemma3_file_is_detected_without_missing_keys():
    shapes = tensor_shapes(str(gemma_file()))
    assert text.gemma3_prefix(shapes) == ""
    assert text.gemma3_config(shapes, "") == GEMMA
    source = text._gemma_source(str(gemma_file()), "", shapes)
    assert source.keys == {k for k in shapes if k.startswith("model.")}  # vision tower and tokenizer left out
    module = source.build(source.read("cpu"))
    assert set(module.state_dict()) == set(source.keys)


def test_text_head_layout_is_read_from_the_checkpoints():
    shapes = tensor_shapes(str(ltx2_head_file()))
    assert text_head.head_layout(shapes) == HEAD
    assert text_head.head_layout(tensor_shapes(str(ltx23_head_file()))) == HEAD_23  # connectors left out
    assert text_head.head_layout(tensor_shapes(str(gemma_file()))) is None
    read = {text_head.head_key(k, HEAD) for k in shapes} - {None}
    from comfy_kernel_core_nodes.model import ops

    with torch.device("meta"):
        assert read == set(text_head.TextHead(ops.plain, HEAD).state_dict())
    assert "model.diffusion_model.patchify_proj.weight" in shapes


def test_fp8_text_head_is_scaled_back(tmp_path):
    """An fp8 checkpoint's projection with its per-tensor ``weight_scale`` reads as the scaled weight."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(ltx2_head_file()))
    key = "text_embedding_projection.aggregate_embed.weight"
    weight = sd[key].float()
    sd[key] = (weight / 0.01).to(torch.float8_e4m3fn)
    sd[key + "_scale"] = torch.tensor(0.01)
    sd["text_embedding_projection.aggregate_embed.comfy_quant"] = torch.zeros(4, dtype=torch.uint8)
    save_file(sd, str(tmp_path / "fp8.safetensors"))
    shapes = tensor_shapes(str(tmp_path / "fp8.safetensors"))
    gemma = text._gemma_source(str(gemma_file()), "", tensor_shapes(str(gemma_file())))
    source = text._head_source(str(tmp_path / "fp8.safetensors"), shapes, HEAD, gemma)
    read = source.read("cpu")
    assert set(read) == set(source.keys) and "text_embedding_projection.weight_scale" not in read
    expected = (sd[key].float() * 0.01)
    torch.testing.assert_close(read["text_embedding_projection.weight"].float(), expected, atol=1e-3, rtol=1e-2)
    assert (read["text_embedding_projection.weight"].float() - weight).abs().max() < 0.1 * weight.abs().max()


def test_clip_keys_are_comfyuis_and_take_generic_loras(clip):
    from comfy_kernel_core_nodes.model.lora import model_lora_keys_clip

    keys = clip.cond_stage_model.state_dict_keys()
    assert {"text_embedding_projection.weight", "video_embeddings_connector.learnable_registers",
            "audio_embeddings_connector.transformer_1d_blocks.1.ff.net.2.bias",
            "gemma3_12b.transformer.model.layers.6.self_attn.k_norm.weight"} <= keys
    assert not any(k.startswith("model.diffusion_model.") for k in keys)
    key_map = model_lora_keys_clip(clip.cond_stage_model)
    assert key_map["text_encoders.gemma3_12b.transformer.model.layers.0.self_attn.q_proj"] == \
        "gemma3_12b.transformer.model.layers.0.self_attn.q_proj.weight"


def test_tokenizer_pads_left_and_keeps_text_as_is(clip):
    tokens = clip.tokenize("(a cat:1.2)")["gemma3_12b"][0]
    assert len(tokens) == text.MIN_LENGTH and all(w == 1.0 for _, w in tokens)
    ids = [t for t, _ in tokens]
    body = text.prompt_pairs(tokens)
    assert ids[:len(ids) - len(body)] == [0] * (len(ids) - len(body)) and body[0] == (2, 1.0)
    assert clip.tokenizer.decode([t for t, _ in body[1:]]) == "(a cat:1.2)"  # no weight syntax
    marked = clip.tokenize("<start_of_turn>user\nhi<end_of_turn>\n<image_soft_token>", min_length=1)
    marked_ids = [t for t, _ in marked["gemma3_12b"][0]]
    assert marked_ids[-1] == text.IMAGE_SOFT_TOKEN and text.END_OF_TURN in marked_ids
    assert len(marked_ids) < 12  # <start_of_turn> is one piece
    assert clip.decode(marked_ids) == "<start_of_turn>user\nhi\n"  # the ends of turns and images left out


def test_chat_template_only_when_asked(clip):
    plain = clip.tokenize("hello", min_length=1)["gemma3_12b"][0]
    templated = clip.tokenize("hello", min_length=1, skip_template=False)["gemma3_12b"][0]
    assert len(templated) > len(plain)
    assert clip.decode([t for t, _ in templated]).startswith("<start_of_turn>system\nYou are a helpful assistant.\n<start_of_turn>user\nhello")
    turn = "<start_of_turn>user\nhello<end_of_turn>\n"
    assert clip.tokenize(turn, min_length=1, skip_template=False) == clip.tokenize(turn, min_length=1)
    with_image = clip.tokenize("hello", min_length=1, skip_template=False, image=torch.zeros(1, 8, 8, 3))
    assert text.IMAGE_SOFT_TOKEN in [t for t, _ in with_image["gemma3_12b"][0]]


def _oracle_states(ids: list[int]) -> torch.Tensor:
    from test_llm_gemma3 import oracle

    model = oracle(_gemma_weights(), GEMMA)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=-1)  # [1, L, D, states]


def _oracle_connectors():
    diffusers_connectors = pytest.importorskip("diffusers.pipelines.ltx2.connectors")
    from safetensors.torch import load_file

    heads = HEAD["width"] // 128
    model = diffusers_connectors.LTX2TextConnectors(
        caption_channels=GEMMA.hidden_size, text_proj_in_factor=STATES, video_connector_num_attention_heads=heads,
        audio_connector_num_attention_heads=heads, video_connector_num_layers=HEAD["connector_layers"],
        audio_connector_num_layers=HEAD["connector_layers"], rope_type="split").eval()
    sd = {}
    for key, value in load_file(str(ltx2_head_file())).items():
        key = key.replace("text_embedding_projection.aggregate_embed.", "text_proj_in.")
        key = key.replace("model.diffusion_model.", "").replace("_embeddings_connector.", "_connector.")
        key = key.replace("transformer_1d_blocks", "transformer_blocks")
        key = key.replace("attn1.q_norm", "attn1.norm_q").replace("attn1.k_norm", "attn1.norm_k")
        sd[key] = value.float()
    sd.pop("patchify_proj.weight")
    model.load_state_dict(sd)
    for module in model.modules():
        if hasattr(module, "norm_q"):
            module.norm_q.eps = module.norm_k.eps = 1e-5
    return model


def test_conditioning_matches_transformers_and_diffusers(clip):
    pytest.importorskip("transformers")
    cond = clip.encode_from_tokens(clip.tokenize(PROMPT), return_dict=True)
    assert set(cond) == {"cond", "pooled_output"}  # the connectors ran here: no unprocessed flag, no mask
    ids = [t for t, _ in text.prompt_pairs(clip.tokenize(PROMPT)["gemma3_12b"][0])]
    states = _oracle_states(ids)
    padded = torch.cat([torch.zeros(1, 1024 - len(ids), *states.shape[2:]), states], dim=1)
    mask = torch.cat([torch.zeros(1, 1024 - len(ids)), torch.ones(1, len(ids))], dim=1)
    with torch.no_grad():
        video, audio, kept = _oracle_connectors()(padded, mask)
    assert kept.all()
    result = cond["cond"]
    assert result.shape == (1, 1024, 2 * HEAD["width"])
    close(result[..., :HEAD["width"]], video, 1e-4)
    close(result[..., HEAD["width"]:], audio, 1e-4)
    # the prompt's own tokens and the registers after them both carry the text
    other = clip.encode_from_tokens(clip.tokenize("a woman walks along a beach"))
    assert (other[:, :len(ids)] - result[:, :len(ids)]).abs().max() > 1e-3
    assert (other[:, -1] - result[:, -1]).abs().max() > 1e-3


def test_long_prompts_extend_the_connector_to_a_multiple_of_128(clip):
    long = " ".join([PROMPT] * 120)
    tokens = clip.tokenize(long)
    length = len(text.prompt_pairs(tokens["gemma3_12b"][0]))
    assert length > 1024
    assert clip.encode_from_tokens(tokens).shape[1] == -(-length // 128) * 128


def test_ltx23_projection_is_left_unprocessed():
    from diffusers.pipelines.ltx2.connectors import per_token_rms_norm
    from safetensors.torch import load_file

    clip = text.ltxav_clip(str(gemma_file()), str(ltx23_head_file()))
    out = clip.encode_from_tokens(clip.tokenize(PROMPT), return_dict=True)
    assert out["unprocessed_ltxav_embeds"] is True
    ids = [t for t, _ in text.prompt_pairs(clip.tokenize(PROMPT)["gemma3_12b"][0])]
    x = per_token_rms_norm(_oracle_states(ids)).flatten(2)
    sd = {k: v.float() for k, v in load_file(str(ltx23_head_file())).items()}
    expected = [torch.nn.functional.linear(x * (w / GEMMA.hidden_size) ** 0.5,
                                           sd[f"text_embedding_projection.{name}_aggregate_embed.weight"],
                                           sd[f"text_embedding_projection.{name}_aggregate_embed.bias"])
                for name, w in (("video", 192), ("audio", 96))]
    close(out["cond"], torch.cat(expected, dim=-1), 1e-4)


def test_gemma_alone_writes_text_but_needs_the_checkpoint_to_condition():
    clip = load_clip([str(gemma_file())], "ltxv")
    ids = clip.generate(clip.tokenize("hello", min_length=1, skip_template=False), do_sample=False, max_length=3)
    assert len(ids) == 3 and isinstance(clip.decode(ids), str)
    with pytest.raises(ValueError, match="LTXAVTextEncoderLoader"):
        clip.encode_from_tokens(clip.tokenize("hello"))


def test_enhancer_prompt_wraps_the_text_in_gemma_turns(clip):
    t2v = enhancer_prompt("a dog", image=False)
    assert t2v.startswith("<start_of_turn>system\n" + system_prompt("t2v") + "<end_of_turn>")
    assert system_prompt("t2v") != system_prompt("i2v")
    assert t2v.endswith("<start_of_turn>user\n\nUser Raw Input Prompt: a dog.<end_of_turn>\n<start_of_turn>model\n")
    assert system_prompt("i2v") in enhancer_prompt("a dog", image=True)
    assert "\n<image_soft_token>\n" in enhancer_prompt("a dog", image=True)
    assert enhancer_prompt("a dog", image=True, system="Be brief.").startswith(
        "<start_of_turn>system\nBe brief.<end_of_turn>")
    # the turns are already there: the tokenizer adds no template of its own
    tokens = clip.tokenize(t2v, min_length=1, skip_template=False)["gemma3_12b"][0]
    assert tokens == clip.tokenize(t2v, min_length=1)["gemma3_12b"][0]


@pytest.fixture(scope="module")
def server(graph_server):
    place(gemma_file(), graph_server.models_dir("text_encoders"), "gemma_3_12B_it_fp4_mixed.safetensors")
    place(ltx2_head_file(), graph_server.models_dir("checkpoints"), "ltx-2-19b-dev-fp8.safetensors")
    place(ltx23_head_file(), graph_server.models_dir("checkpoints"), "ltx-2.3-22b-dev-fp8.safetensors")
    yield graph_server


def _loader(ckpt: str) -> dict:
    return {"class_type": "LTXAVTextEncoderLoader", "inputs": {
        "text_encoder": "gemma_3_12B_it_fp4_mixed.safetensors", "ckpt_name": ckpt, "device": "default"}}


@pytest.mark.slow
def test_loader_and_text_encode_through_the_server(server):
    out = server.run({
        "clip": _loader("ltx-2-19b-dev-fp8.safetensors"),
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": PROMPT}},
        "p": {"class_type": "TestProbe", "inputs": {"value": ["pos", 0], "name": "ltx2"}},
        "clip23": _loader("ltx-2.3-22b-dev-fp8.safetensors"),
        "pos23": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip23", 0], "text": PROMPT}},
        "p23": {"class_type": "TestProbe", "inputs": {"value": ["pos23", 0], "name": "ltx23"}},
    })
    [entry] = out["ltx2"]
    assert entry["shape"] == [1, 1024, 2 * HEAD["width"]] and entry["options"] == {"pooled_output": None}
    [entry23] = out["ltx23"]
    assert entry23["shape"][2] == 192 + 96 and entry23["options"]["unprocessed_ltxav_embeds"] is True


@pytest.mark.slow
def test_prompt_enhancer_through_the_server(server):
    """The templates' widget values: sampling on, temperature 0.7, top-k 64 ...; cut to a few tokens."""
    def generate(seed: int, mode: str = "on") -> str:
        sampling = {"sampling_mode": mode}
        if mode == "on":
            sampling.update({"sampling_mode.temperature": 0.7, "sampling_mode.top_k": 64, "sampling_mode.top_p": 0.95,
                             "sampling_mode.min_p": 0.05, "sampling_mode.repetition_penalty": 1.05,
                             "sampling_mode.seed": seed, "sampling_mode.presence_penalty": 0.0})
        out = server.run({
            "clip": _loader("ltx-2-19b-dev-fp8.safetensors"),
            "gen": {"class_type": "TextGenerateLTX2Prompt", "inputs": {
                "clip": ["clip", 0], "prompt": "a dog runs through a field", "max_length": 6, **sampling,
                "thinking": False, "use_default_template": True}},
            "p": {"class_type": "TestProbe", "inputs": {"value": ["gen", 0], "name": "text"}},
        })
        return out["text"]

    first, again, other = generate(0), generate(0), generate(1)
    assert isinstance(first, str) and first
    assert first == again and first != other
    assert isinstance(generate(0, "off"), str)


@pytest.mark.slow
def test_t2v_template_text_nodes_convert_and_run(server):
    """video_ltx2_3_t2v's loader and prompt enhancer, converted by the server, run as the template wires them."""
    from _templates import template

    r = server.server.post("/api/workflows/convert", json={"workflow": template("video_ltx2_3_t2v")})
    assert r.status_code == 200, r.text
    prompt = r.json()["prompt"]
    nodes = {n["class_type"]: (key, n["inputs"]) for key, n in prompt.items()}
    loader_id, loader = nodes["LTXAVTextEncoderLoader"]
    assert loader == {"text_encoder": "gemma_3_12B_it_fp4_mixed.safetensors",
                      "ckpt_name": "ltx-2.3-22b-dev-fp8.safetensors", "device": "default"}
    enhancer_id, enhancer = nodes["TextGenerateLTX2Prompt"]
    assert enhancer["max_length"] == 2048 and enhancer["sampling_mode"] == "on"
    assert enhancer["sampling_mode.top_k"] == 64 and enhancer["sampling_mode.repetition_penalty"] == 1.05
    lora_id, lora = nodes["LoraLoader"]  # the template's abliterated Gemma LoRA sits between them (not here)
    assert enhancer["clip"] == [lora_id, 1] and lora["clip"] == [loader_id, 0]
    enhancer.update(prompt="a dog runs through a field", max_length=5, clip=[loader_id, 0])
    sub = {loader_id: prompt[loader_id], enhancer_id: prompt[enhancer_id],
           "enc": {"class_type": "CLIPTextEncode", "inputs": {"clip": [loader_id, 0], "text": [enhancer_id, 0]}},
           "p": {"class_type": "TestProbe", "inputs": {"value": ["enc", 0], "name": "cond"}},
           "t": {"class_type": "TestProbe", "inputs": {"value": [enhancer_id, 0], "name": "text"}}}
    out = server.run(sub)
    assert isinstance(out["text"], str) and out["text"]
    assert out["cond"][0]["options"]["unprocessed_ltxav_embeds"] is True
