"""Loop pairing, bodies and the graph the executor runs (``comfy_kernel.execution.loops``)."""

from __future__ import annotations

import pytest

from comfy_kernel.execution.loops import RESULT_INPUT, LoopError, find_loops, prepare

KINDS = {"Start": "start", "End": "end"}


def node(kind: str, **inputs) -> dict:
    return {"class_type": kind, "inputs": inputs}


def boundary(class_type: str) -> str | None:
    return KINDS.get(class_type)


def marks(prompt: dict) -> dict[str, str]:
    return {n: KINDS[v["class_type"]] for n, v in prompt.items() if v["class_type"] in KINDS}


def loops_of(prompt: dict) -> dict[str, tuple[str, list[str]]]:
    return {loop.start: (loop.end, sorted(loop.body)) for loop in find_loops(prompt, marks(prompt))}


def test_a_loop_body_is_what_lies_between_start_and_end_plus_its_side_effects():
    prompt = {
        "src": node("Value"),
        "s": node("Start", initial=["src", 0]),
        "a": node("Math", x=["s", 0], y=["src", 0]),
        "b": node("Math", x=["a", 0]),
        "preview": node("Preview", value=["b", 0]),
        "e": node("End", output_value=["b", 0], next_iteration_value=["a", 0]),
        "after": node("Save", value=["e", 0]),
    }
    assert loops_of(prompt) == {"s": ("e", ["a", "b", "preview"])}


def test_nested_and_chained_loops_pair_as_drawn():
    prompt = {
        "s1": node("Start"),
        "s2": node("Start", parent_iteration=["s1", 0]),
        "x": node("Math", a=["s1", 0], b=["s2", 0]),
        "e2": node("End", output_value=["x", 0]),
        "e1": node("End", output_value=["e2", 0]),
        "s3": node("Start", initial=["e1", 0]),
        "y": node("Math", a=["s3", 4]),
        "e3": node("End", output_value=["y", 0]),
    }
    assert loops_of(prompt) == {"s1": ("e1", ["e2", "s2", "x"]), "s2": ("e2", ["x"]), "s3": ("e3", ["y"])}


@pytest.mark.parametrize("prompt, blamed", [
    ({"s": node("Start"), "a": node("Math", x=["s", 0])}, "s"),
    ({"v": node("Value"), "e": node("End", output_value=["v", 0])}, "e"),
    ({"s": node("Start"), "a": node("Math", x=["s", 0]), "e1": node("End", output_value=["a", 0]),
      "e2": node("End", output_value=["a", 0])}, "s"),
    ({"s": node("Start"), "a": node("Math", x=["s", 0]), "e": node("End", output_value=["a", 0]),
      "late": node("Math", x=["a", 0], y=["e", 0])}, "late"),
    ({"s": node("Start"), "e": node("End", output_value=["s", 0]), "late": node("Math", x=["s", 0], y=["e", 0])},
     "late"),
    ({"s1": node("Start"), "s2": node("Start"), "a": node("Math", x=["s1", 0], y=["s2", 0]),
      "e2": node("End", output_value=["a", 0]), "b": node("Math", x=["e2", 0]),
      "e1": node("End", output_value=["b", 0])}, "s1"),  # two loops that cross: one end inside the other
])
def test_malformed_loops_name_the_node_to_blame(prompt, blamed):
    with pytest.raises(LoopError) as caught:
        find_loops(prompt, marks(prompt))
    assert caught.value.node_id == blamed


def test_prepare_hands_the_body_to_the_start_and_the_result_to_the_end():
    prompt = {
        "n": node("Value"),
        "s": node("Start", initial=["n", 0]),
        "a": node("Math", x=["s", 4]),
        "p": node("Preview", value=["a", 0]),
        "e": node("End", output_value=["a", 0], next_iteration_value=["a", 0], accumulate=True, extra=["n", 0]),
        "save": node("Save", value=["e", 0]),
    }
    graph, outputs = prepare(prompt, ["p", "save"], boundary)
    assert graph["s"]["_loop_body"] == ["a", "p"] and graph["s"]["_loop_end"] == "e"
    assert graph["e"]["inputs"] == {"accumulate": True, "extra": ["n", 0], RESULT_INPUT: ["s", 0]}
    assert graph["e"]["_loop_inputs"] == {"output_value": ["a", 0], "next_iteration_value": ["a", 0]}
    assert outputs == ["save"]
    assert "_loop_body" not in prompt["s"] and "output_value" in prompt["e"]["inputs"]  # the prompt is untouched


def test_prepare_leaves_a_prompt_without_loops_as_it_is():
    prompt = {"a": node("Value"), "b": node("Save", value=["a", 0])}
    graph, outputs = prepare(prompt, ["b"], boundary)
    assert graph is prompt and outputs == ["b"]
