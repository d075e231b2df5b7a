"""TextGenerate on the random-weight Qwen3 4B and Qwen2.5-VL 7B files (one LLM layer each, full width).

The generation itself is checked against transformers in test_llm_generate.py;
here the node: the chat template the model receives, the CLIP types that
load a chat LLM, greedy and sampled runs, the image path through the
vision tower, and the split of a thinking model's reasoning.
"""

from __future__ import annotations

import pytest
import torch
from _files_qwen import qwen3_4b, qwen25_vl_fp8_scaled
from _flux import klein_encoder_config, klein_encoder_state_dict
from _random_weights import write

from comfy_kernel_core_nodes.components.llm.generate import Sampling, generate
from comfy_kernel_core_nodes.components.llm.tokenizer import qwen_tokenizer
from comfy_kernel_core_nodes.model.loading import UnsupportedModel, load_clip
from comfy_kernel_core_nodes.nodes.textgen import TextGenerate, split_reasoning

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

GREEDY = {"sampling_mode": "off"}
SAMPLED = {"sampling_mode": "on", "temperature": 0.7, "top_k": 64, "top_p": 0.95, "min_p": 0.05,
           "repetition_penalty": 1.05, "seed": 3, "presence_penalty": 0.0}


def _run(clip, prompt: str, sampling: dict, length: int = 4, **kw) -> tuple[str, str]:
    return tuple(TextGenerate.execute(clip, prompt, length, sampling, **kw).result)


@pytest.fixture(scope="module")
def qwen3():
    return load_clip([str(qwen3_4b())], "lumina2")


def test_the_prompt_reaches_the_model_in_qwen3_chat_turns(qwen3):
    text = qwen_tokenizer().decode
    ids = lambda tokens: [t for t, _ in tokens["qwen3_4b"][0]]  # noqa: E731
    plain = text(ids(qwen3.tokenize("a fox", thinking=False, min_length=1)))
    assert plain == "<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    thinking = text(ids(qwen3.tokenize("a fox", thinking=True)))
    assert thinking == "<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n"
    system = text(ids(qwen3.tokenize("a fox", thinking=True, system_prompt="Be brief.")))
    assert system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na fox<|im_end|>\n" \
                     "<|im_start|>assistant\n"
    assert text(ids(qwen3.tokenize("raw <b>", skip_template=True, thinking=False))) == "raw <b>"
    # CLIPTextEncode (no generation options) keeps Z-Image's encoding template
    assert text(ids(qwen3.tokenize("a fox"))) == "<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n"


def test_greedy_text_is_the_decoded_generation(qwen3):
    answer, reasoning = _run(qwen3, "Describe a lighthouse.", GREEDY, length=5)
    tokens = qwen3.tokenize("Describe a lighthouse.", thinking=False, min_length=1)
    with qwen3.patcher.use() as encoder:
        from comfy_kernel_core_nodes.components.llm.encoder import embed_prompt

        embeds, _ = embed_prompt(encoder.loaded_module, tokens["qwen3_4b"][0])
        ids = generate(encoder.loaded_module, embeds, 5, Sampling())
    assert len(ids) == 5 and answer == qwen3.decode(ids).strip() and answer
    assert reasoning == ""
    assert _run(qwen3, "Describe a lighthouse.", GREEDY, length=5) == (answer, reasoning)


def test_sampling_follows_the_seed(qwen3):
    first = _run(qwen3, "Name a colour.", SAMPLED)
    assert _run(qwen3, "Name a colour.", SAMPLED) == first
    assert _run(qwen3, "Name a colour.", {**SAMPLED, "seed": 4}) != first
    assert first != _run(qwen3, "Name a colour.", GREEDY)


def test_a_qwen3_file_loads_under_any_clip_type_that_has_no_use_for_it():
    """ComfyUI picks the encoder by the file's keys: the LLM templates load Qwen3 4B as type ltxv."""
    for clip_type in ("ltxv", "stable_diffusion", "wan"):
        clip = load_clip([str(qwen3_4b())], clip_type)
        assert clip.cond_stage_model.name == "z_image_clip"
    with pytest.raises(UnsupportedModel):
        load_clip([str(qwen25_vl_fp8_scaled())], "ltxv")  # Qwen2.5-VL has no such default


def test_qwen25_vl_sees_the_image():
    clip = load_clip([str(qwen25_vl_fp8_scaled())], "qwen_image")
    image = torch.rand(1, 56, 84, 3, generator=torch.Generator().manual_seed(0))
    tokens = clip.tokenize("What is in the picture?", image=image, thinking=False)
    assert any(isinstance(t, dict) and t["type"] == "image" for t, _ in tokens["qwen25_7b"][0])
    seen = _run(clip, "What is in the picture?", GREEDY, length=3, image=image)
    assert _run(clip, "What is in the picture?", GREEDY, length=3, image=image) == seen
    other = _run(clip, "What is in the picture?", GREEDY, length=3, image=1 - image)
    blind = _run(clip, "What is in the picture?", GREEDY, length=3)
    assert seen[0] and seen != other and seen != blind


def test_klein_qwen3_reply_is_transformers_greedy_generation(tmp_path):
    """Flux.2 klein's Qwen3 (28 layers at width 64, the real vocabulary) loaded by CLIPLoader type flux2:
    the node's token ids after the chat template are transformers' greedy ones on the same weights."""
    transformers = pytest.importorskip("transformers")
    sd = klein_encoder_state_dict(dtype=torch.float16)
    clip = load_clip([str(write(tmp_path / "qwen_3_4b.safetensors", sd))], "flux2")
    tokens = clip.tokenize("a red fox", min_length=1, thinking=False)
    ids = [t for t, _ in tokens["qwen3_4b"][0]]
    assert qwen_tokenizer().decode(ids).endswith("assistant\n<think>\n\n</think>\n\n")  # once, no padding
    assert qwen_tokenizer().decode([t for t, _ in clip.tokenize("a red fox", thinking=True, min_length=1)["qwen3_4b"][0]]) \
        .endswith("<|im_start|>assistant\n")
    config = klein_encoder_config()
    hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        vocab_size=config.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=28,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6, rope_theta=1e6,
        attn_implementation="eager", max_position_embeddings=1024, tie_word_embeddings=True)).eval()
    state = {k: v.float() for k, v in sd.items()}
    hf.load_state_dict({**state, "lm_head.weight": state["model.embed_tokens.weight"]})
    prompt = torch.tensor([ids])
    with torch.no_grad():
        out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                          eos_token_id=[151643, 151645], pad_token_id=151643, temperature=None, top_p=None,
                          top_k=None)
    expected = out[0, len(ids):].tolist()
    assert clip.generate(tokens, do_sample=False, max_length=12) == expected
    answer, _ = _run(clip, "a red fox", GREEDY, length=12)
    assert answer == clip.decode(expected).strip()


def test_reasoning_is_split_from_the_answer():
    assert split_reasoning("<think>\nweigh it</think>\n\nBlue.") == ("Blue.", "weigh it")
    assert split_reasoning("weigh it</think>Blue.") == ("Blue.", "weigh it")  # the prompt opened the block
    assert split_reasoning("<think>still weighing") == ("", "still weighing")  # cut short by max_length
    assert split_reasoning("  Blue. ") == ("Blue.", "")


def test_qwen3_decodes_its_thinking_tags(qwen3):
    ids = [151667] + qwen_tokenizer().encode("hmm") + [151668] + qwen_tokenizer().encode("Blue.") + [151645]
    assert qwen3.decode(ids) == "<think>hmm</think>Blue."
    assert split_reasoning(qwen3.decode(ids)) == ("Blue.", "hmm")
