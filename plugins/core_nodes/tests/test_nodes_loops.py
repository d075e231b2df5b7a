"""Start Loop / End Loop through a real server: counting modes, carried values, lists, nesting, side effects.

The loops compute small sums and strings with ComfyMathExpression and
StringConcatenate so every expected result can be worked out by hand.
"""

from __future__ import annotations

import shutil

import pytest
from _graph import PROBE_PACK, GraphServer

from comfy_kernel.testing import ServerProcess


def start(mode: str = "simple", **inputs):
    values = {f"mode.{k}": v for k, v in inputs.items() if k not in ("initial", "parent", "cache")}
    node = {"mode": mode, "cache_iterations": inputs.get("cache", False), **values}
    if "initial" in inputs:
        node["initial_iteration_value"] = inputs["initial"]
    if "parent" in inputs:
        node["parent_iteration"] = inputs["parent"]
    return {"class_type": "StartLoop", "inputs": node}


def end(output=None, carry=None, accumulate=False, **terminations):
    node = {"accumulate": accumulate}
    if output is not None:
        node["output_value"] = output
    if carry is not None:
        node["next_iteration_value"] = carry
    node.update({f"terminations.{k}": v for k, v in terminations.items()})
    return {"class_type": "EndLoop", "inputs": node}


def math(expression: str, **values):
    return {"class_type": "ComfyMathExpression",
            "inputs": {"expression": expression, **{f"values.{k}": v for k, v in values.items()}}}


def probe_list(value, name: str = "r"):
    return {"class_type": "TestProbeList", "inputs": {"value": value, "name": name}}


def results(recorded: dict, name: str = "r") -> list:
    return [recorded[f"{name}_{i}"] for i in range(len(recorded)) if f"{name}_{i}" in recorded]


def running_sum(accumulate: bool, iterations: int = 4) -> dict:
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 0}},
        "2": start(num_iterations=iterations, initial=["1", 0]),
        "3": math("a + b", a=["2", 4], b=["2", 0]),
        "4": end(output=["3", 1], carry=["3", 1], accumulate=accumulate),
        "5": probe_list(["4", 0]),
    }


def test_carried_value_runs_through_every_iteration(graph_server):
    assert results(graph_server.run(running_sum(accumulate=False))) == [6]  # 0 + 0 + 1 + 2 + 3
    assert results(graph_server.run(running_sum(accumulate=True))) == [0, 1, 3, 6]


def test_for_mode_counts_a_range(graph_server):
    prompt = {
        "1": start("For", start_iteration_index=2, max_iteration=10, step=3),
        "2": math("a * 10", a=["1", 0]),
        "3": end(output=["2", 1], accumulate=True),
        "4": probe_list(["3", 0]),
    }
    assert results(graph_server.run(prompt)) == [20, 50, 80]


def test_first_and_last_flags(graph_server):
    prompt = {
        "1": start(num_iterations=3),
        "2": math("a * 2 + b", a=["1", 1], b=["1", 2]),
        "3": end(output=["2", 1], accumulate=True),
        "4": probe_list(["3", 0]),
    }
    assert results(graph_server.run(prompt)) == [2, 0, 1]


def test_list_mode_gives_one_item_per_iteration(graph_server):
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "cat"}},
        "2": {"class_type": "PrimitiveString", "inputs": {"value": "dog"}},
        "3": {"class_type": "CreateList", "inputs": {"inputs.input0": ["1", 0], "inputs.input1": ["2", 0]}},
        "4": start("List", list=["3", 0]),
        "5": {"class_type": "StringConcatenate",
              "inputs": {"string_a": ["4", 3], "string_b": "!", "delimiter": ""}},
        "6": end(output=["5", 0], accumulate=True),
        "7": probe_list(["6", 0]),
    }
    assert results(graph_server.run(prompt)) == ["cat!", "dog!"]


def test_nested_loops_unroll_inside_each_outer_iteration(graph_server):
    prompt = {
        "1": start(num_iterations=3),
        "2": start(num_iterations=2, parent=["1", 0]),
        "3": math("a * 10 + b", a=["1", 0], b=["2", 0]),
        "4": end(output=["3", 1], accumulate=True),
        "5": end(output=["4", 0], accumulate=True),
        "6": probe_list(["5", 0]),
    }
    assert results(graph_server.run(prompt)) == [0, 1, 10, 11, 20, 21]


def test_loop_result_feeds_the_rest_of_the_graph(graph_server):
    prompt = running_sum(accumulate=False, iterations=5)
    prompt["5"] = math("a * 100", a=["4", 0])
    prompt["6"] = probe_list(["5", 1])
    assert results(graph_server.run(prompt)) == [1000]


def test_zero_iterations_give_an_empty_result(graph_server):
    recorded = graph_server.run({**running_sum(accumulate=True, iterations=0),
                                 "9": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
                                 "10": {"class_type": "TestProbe", "inputs": {"value": ["9", 0], "name": "done"}}})
    assert results(recorded) == [] and recorded["done"] == 1


def test_an_output_node_inside_the_loop_runs_every_iteration(graph_server):
    prompt = running_sum(accumulate=False, iterations=3)
    prompt["6"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}}
    recorded, outputs = graph_server.run_with_outputs(prompt)
    assert results(recorded) == [3]
    assert sorted(o["text"][0] for o in outputs.values() if "text" in o) == ["0", "1", "3"]


def test_cache_iterations_skips_unchanged_iterations(graph_server):
    def prompt(cache: bool) -> dict:
        return {
            "1": start(num_iterations=2, cache=cache),
            "2": math("a + 7", a=["1", 0]),
            "3": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                          "color": ["2", 1]}},
            "4": {"class_type": "TestProbe", "inputs": {"value": ["3", 0], "name": "inside"}},
            "5": end(output=["2", 1], accumulate=True),
            "6": probe_list(["5", 0], "out"),
        }

    def out(cache: bool) -> list:  # the probe inside the loop is read from disk by the check below only
        outputs = graph_server.outputs(prompt(cache))
        return [item["value"] for o in outputs.values() for item in o.get("probe", []) if item["name"][:4] == "out_"]

    written = graph_server.output_dir / "probes" / "inside.npy"
    for cache in (True, False):
        assert out(cache) == [7, 8]
        written.unlink()
        assert out(cache) == [7, 8]
        assert written.exists() is not cache  # a cached iteration's probe did not run again


@pytest.mark.parametrize("case", ["no_end", "no_start", "read_from_outside", "crossing"])
def test_malformed_loops_are_refused(graph_server, case):
    prompt = running_sum(accumulate=False)
    if case == "no_end":
        prompt["4"] = math("a", a=["3", 1])
        prompt["5"] = probe_list(["4", 1])
    elif case == "no_start":
        prompt["2"] = {"class_type": "PrimitiveInt", "inputs": {"value": 3}}
        prompt["3"] = math("a + 1", a=["2", 0])
    elif case == "read_from_outside":  # after the loop, yet reading a value from inside it
        prompt["6"] = math("a + b", a=["3", 1], b=["4", 0])
        prompt["7"] = probe_list(["6", 1], "leak")
    else:  # an inner loop whose start is outside the outer loop but whose end is inside it
        prompt["7"] = start(num_iterations=2)
        prompt["8"] = math("a + b", a=["7", 0], b=["2", 0])
        prompt["9"] = end(output=["8", 1])
        prompt["3"] = math("a + b", a=["2", 4], b=["9", 0])
    r = graph_server.server.post("/prompt", json={"prompt": prompt})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    [(node_id, entry)] = body["node_errors"].items()
    assert entry["errors"][0]["type"] == "invalid_loop"
    assert node_id in prompt


def test_the_ming_template_aspect_ratio_loop(graph_server):
    """The "Aspect Ratio (gcd-reduced)" subgraph of image_ming_image_01_design_image_edit, node for node.

    Euclid's algorithm carries the pair [a, b] (a CreateList output list) from one iteration to the next;
    once b reaches 0 the pair stays [gcd, 0]. The template's note gives 896 x 1152 -> "7:9, 896 × 1152 px".
    """
    def make_list(a, b):
        return {"class_type": "CreateList", "inputs": {"inputs.input0": a, "inputs.input1": b}}

    def get(source, index):
        return {"class_type": "GetItemFromList", "inputs": {"list": source, "index": index}}

    prompt = {
        "w": {"class_type": "PrimitiveInt", "inputs": {"value": 896}},
        "h": {"class_type": "PrimitiveInt", "inputs": {"value": 1152}},
        "324": make_list(["w", 0], ["h", 0]),
        "337": math("ceil(1.5 * log2(max(a, b))) + 2", a=["w", 0], b=["h", 0]),
        "325": start(num_iterations=["337", 1], initial=["324", 0]),
        "326": get(["325", 4], 0),
        "327": get(["325", 4], 1),
        "328": math("a % b if b > 0 else 0", a=["326", 0], b=["327", 0]),
        "329": math("b if b > 0 else a", a=["326", 0], b=["327", 0]),
        "330": make_list(["329", 1], ["328", 1]),
        "331": end(output=["330", 0], carry=["330", 0]),
        "332": get(["331", 0], 0),
        "333": math("a / b", a=["w", 0], b=["332", 0]),
        "334": math("a / b", a=["h", 0], b=["332", 0]),
        "335": {"class_type": "StringFormat",
                "inputs": {"f_string": "{a}:{b}, {c} × {d} px", "values.a": ["333", 1], "values.b": ["334", 1],
                           "values.c": ["w", 0], "values.d": ["h", 0]}},
        "out": {"class_type": "TestProbe", "inputs": {"value": ["335", 0], "name": "ratio"}},
    }
    assert graph_server.run(prompt)["ratio"] == "7:9, 896 × 1152 px"


def test_loops_with_cache_none(tmp_path):
    """--cache-none drops each output once its readers finished; the carried value must still reach every iteration."""
    shutil.copytree(PROBE_PACK, tmp_path / "custom_nodes" / "probe_pack")
    with ServerProcess(tmp_path, "--cpu", "--cache-none") as server:
        graph = GraphServer(server, tmp_path)
        assert results(graph.run(running_sum(accumulate=True))) == [0, 1, 3, 6]
        test_nested_loops_unroll_inside_each_outer_iteration(graph)
