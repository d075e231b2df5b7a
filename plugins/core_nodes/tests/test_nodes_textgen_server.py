"""The LLM text-generation template through the server: real HTTP, the UI workflow converted and queued.

``llm_qwen3_text_gen`` (CLIPLoader -> TextGenerate -> PreviewAny) was blocked
only by TextGenerate. The random-weight Qwen3 4B file sits in
``text_encoders/`` under the template's name; the generation is cut to a few
tokens (random weights never reach <|im_end|>, and a CPU step takes a second).
"""

from __future__ import annotations

import pytest
from _files_qwen import place, qwen3_4b
from _templates import template
from test_family_qwen_e2e import _converted

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TEMPLATE = "llm_qwen3_text_gen"


@pytest.fixture(scope="module")
def server(graph_server):
    place(qwen3_4b(), graph_server.models_dir("text_encoders"), "qwen_3_4b.safetensors")
    yield graph_server


def test_llm_text_generation_template_runs(server):
    prompt = _converted(server, template(TEMPLATE))
    nodes = {n["class_type"]: (key, n["inputs"]) for key, n in prompt.items()}
    assert set(nodes) == {"CLIPLoader", "TextGenerate", "PreviewAny"}
    assert nodes["CLIPLoader"][1] == {"clip_name": "qwen_3_4b.safetensors", "type": "ltxv", "device": "default"}
    generate_id, inputs = nodes["TextGenerate"]
    assert inputs["sampling_mode"] == "on" and inputs["sampling_mode.temperature"] == 0.7
    assert inputs["sampling_mode.top_k"] == 64 and inputs["sampling_mode.seed"] == 0
    assert inputs["max_length"] == 2048 and inputs["prompt"].startswith("Now ComfyUI has native LLM support")
    inputs["max_length"] = 4
    prompt["probe"] = {"class_type": "TestProbe", "inputs": {"value": [generate_id, 0], "name": "text"}}
    recorded, outputs = server.run_with_outputs(prompt, timeout=900)
    text = recorded["text"]
    assert isinstance(text, str) and text
    preview_id = nodes["PreviewAny"][0]
    assert outputs[preview_id]["text"] == [text]  # the STRING reached the next node
    # the seed widget inside the dynamic combo reaches the sampler
    inputs["sampling_mode.seed"] = 1
    other, _ = server.run_with_outputs(prompt, timeout=900)
    assert other["text"] != text
