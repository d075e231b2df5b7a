"""Unit tests of the executor's pure parts: type predicate, validation catalogue,
signatures, scheduling order and caches."""

from __future__ import annotations

import asyncio
import copy

import pytest

from comfy_kernel.execution.caching import CacheEntry, LRUOutputCache, OutputCache, Signatures
from comfy_kernel.execution.graph import DynamicPrompt, ExecutionList
from comfy_kernel.execution.nodeclass import NodeDefs
from comfy_kernel.execution.validation import validate_node_input, validate_prompt
from comfy_kernel.nodes.graph_utils import GraphBuilder, add_graph_prefix, is_link
from comfy_kernel.nodes.registry import NodeRegistry
from comfy_kernel.nodes.types import IO
from tests.nodepacks import testing_nodes as pack


@pytest.fixture(scope="module")
def registry():
    reg = NodeRegistry()
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        reg.register(name, cls)
    return reg


def validate(prompt, registry, targets=None):
    return asyncio.run(validate_prompt(prompt, registry, targets))


# --- type predicate (spec §2.4) ----------------------------------------------------------

@pytest.mark.parametrize("received,accepted,ok", [
    ("STRING", "STRING", True), ("STRING", "STRING,INT", True), ("INT,STRING", "STRING,INT", True),
    ("STRING", "INT", False), ("", "", True), ("", "INT", False), ("*", "INT", False), ("INT", "*", False),
    (" INT ", "INT", True), (["a"], ["a"], True), (["a"], ["b"], False), (1, "INT", False),
    (IO.ANY, "INT", True), ("INT", IO.ANY, True), (IO.NUMBER, "FLOAT", True), (pack.ANY, "X", True),
])
def test_validate_node_input(received, accepted, ok):
    assert validate_node_input(received, accepted) is ok


# --- validation catalogue (spec §4) --------------------------------------------------------

def out(src):
    return {"class_type": "TestOutput", "inputs": {"value": src}}


def test_structural_errors(registry):
    ok, err, _, ne = validate({"1": {"inputs": {}}}, registry)
    assert not ok and err["type"] == "invalid_prompt" and err["details"] == "Node ID '#1'" and ne == {}
    ok, err, _, _ = validate({"1": {"class_type": "Nope", "inputs": {}}}, registry)
    assert err["message"] == "Cannot execute because node Nope does not exist."
    ok, err, _, _ = validate({"1": {"class_type": "TestValue", "inputs": {"value": 1}}}, registry)
    assert err == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
    ok, err, _, _ = validate({"1": {"class_type": "TestValue", "inputs": {"value": 1}}, "2": out(["1", 0])},
                             registry, targets=[])
    assert err["type"] == "prompt_no_outputs"


def test_value_errors_and_conversion(registry):
    prompt = {"1": {"class_type": "TestFloat", "inputs": {"value": 5}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert not ok and err["type"] == "prompt_outputs_failed_validation" and err["details"] == ""
    e = ne["1"]["errors"][0]
    assert e["type"] == "value_bigger_than_max" and e["message"] == "Value 5.0 bigger than max of 1.0"
    assert e["extra_info"]["input_config"] == ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}]
    assert ne["1"]["dependent_outputs"] == ["2"] and ne["1"]["class_type"] == "TestFloat"
    prompt = {"1": {"class_type": "TestValue", "inputs": {"value": "7"}}, "2": out(["1", 0])}
    ok, *_ = validate(prompt, registry)
    assert ok and prompt["1"]["inputs"]["value"] == 7
    prompt = {"1": {"class_type": "TestValue", "inputs": {"value": "x"}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["1"]["errors"][0]["type"] == "invalid_input_type"
    prompt = {"1": {"class_type": "TestCombo", "inputs": {"choice": "z"}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["1"]["errors"][0]["details"] == "choice: 'z' not in ['a', 'b', 'c']"
    prompt = {"1": {"class_type": "TestAdd", "inputs": {"a": 1}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["1"]["errors"][0]["type"] == "required_input_missing"
    prompt = {"1": {"class_type": "TestAdd", "inputs": {"a": [1, 2, 3], "b": 1}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["1"]["errors"][0]["type"] == "bad_linked_input"


def test_link_errors(registry):
    prompt = {"1": {"class_type": "TestValue", "inputs": {"value": 1}},
              "2": {"class_type": "TestFloat", "inputs": {"value": ["1", 0]}}, "3": out(["2", 0])}
    ok, err, _, ne = validate(prompt, registry)
    e = ne["2"]["errors"][0]
    assert e["type"] == "return_type_mismatch"
    assert e["details"] == "value, received_type(INT) mismatch input_type(FLOAT)"
    prompt = {"1": {"class_type": "TestAdd", "inputs": {"a": ["removeme", 0], "b": 1}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["1"]["errors"][0]["type"] == "exception_during_inner_validation"
    assert ne["1"]["errors"][0]["details"] == "'removeme'"
    # input_types: the node judges link types itself
    prompt = {"1": {"class_type": "TestValue", "inputs": {"value": 1}},
              "2": {"class_type": "TestInputTypes", "inputs": {"value": ["1", 0]}}, "3": out(["2", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["2"]["errors"][0]["type"] == "custom_validation_failed"
    prompt["1"] = {"class_type": "TestFloat", "inputs": {"value": 0.5}}
    assert validate(prompt, registry)[0]


def test_custom_validation(registry):
    prompt = {"1": {"class_type": "TestCustomValidation", "inputs": {"value": -1}}, "2": out(["1", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert ne["1"]["errors"] == [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                                  "details": "value - value must not be negative",
                                  "extra_info": {"input_name": "value"}}]
    prompt = {"1": {"class_type": "TestKwargsValidation", "inputs": {"value": 5.0}}, "2": out(["1", 0])}
    assert validate(prompt, registry)[0]  # **kwargs disables min/max
    prompt["1"]["inputs"]["value"] = 3.0
    assert not validate(prompt, registry)[0]


def test_partial_validity_and_true_dependents(registry):
    prompt = {"1": {"class_type": "TestFloat", "inputs": {"value": 5}}, "2": out(["1", 0]),
              "3": {"class_type": "TestValue", "inputs": {"value": 1}}, "4": out(["3", 0])}
    ok, err, outputs, ne = validate(prompt, registry)
    assert ok and outputs == ["4"] and ne["1"]["dependent_outputs"] == ["2"]


def test_static_cycle_rejected(registry):
    prompt = {"1": {"class_type": "TestAdd", "inputs": {"a": ["2", 0], "b": 1}},
              "2": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": 1}}, "3": out(["2", 0])}
    ok, err, _, ne = validate(prompt, registry)
    assert not ok and err["type"] == "prompt_outputs_failed_validation"
    [(node, entry)] = ne.items()
    assert entry["errors"][0]["type"] == "dependency_cycle" and entry["dependent_outputs"] == ["3"]


def test_deep_chain_validates_iteratively(registry):
    n = 20000
    prompt = {"0": {"class_type": "TestValue", "inputs": {"value": 1}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "TestAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = out([str(n - 1), 0])
    ok, err, outputs, _ = validate(prompt, registry)
    assert ok and outputs == ["out"]


# --- signatures ---------------------------------------------------------------------------------

def keys_of(prompt, registry, fingerprints=None):
    sigs = Signatures(DynamicPrompt(prompt), NodeDefs(registry), fingerprints or {})
    return {n: sigs.key(n) for n in prompt}


def test_signatures(registry):
    base = {"1": {"class_type": "TestValue", "inputs": {"value": 1}},
            "2": {"class_type": "TestValue", "inputs": {"value": 1}},
            "3": {"class_type": "TestAdd", "inputs": {"a": ["1", 0], "b": 2}},
            "4": {"class_type": "TestUniqueId", "inputs": {"value": 1}},
            "5": {"class_type": "TestUniqueId", "inputs": {"value": 1}}}
    k = keys_of(base, registry)
    assert k["1"] == k["2"]  # identical nodes share a key
    assert k["4"] != k["5"]  # UNIQUE_ID puts the id in the key
    changed = copy.deepcopy(base)
    changed["1"]["inputs"]["value"] = 9
    k2 = keys_of(changed, registry)
    assert k2["3"] != k["3"] and k2["2"] == k["2"]
    assert keys_of(base, registry, {"1": float("nan")})["1"] is None
    assert keys_of(base, registry, {"1": float("nan")})["3"] is None


def test_signature_cost_is_linear(registry):
    import time

    def chain(n):
        p = {"0": {"class_type": "TestValue", "inputs": {"value": 1}}}
        for i in range(1, n):
            p[str(i)] = {"class_type": "TestAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
        return p

    def cost(n):
        # the fastest of several runs: other processes on the machine only ever add time
        p = chain(n)
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            keys_of(p, registry)
            runs.append(time.perf_counter() - t)
        return min(runs)

    cost(500)
    small, big = cost(2000), cost(20000)
    assert big < small * 40  # linear: ~10x; quadratic key building (ComfyUI's) would be ~100x


# --- caches ----------------------------------------------------------------------------------------

def test_classic_cache_keeps_only_current_keys():
    c = OutputCache()
    c.start_prompt({"a"}, {})
    c.set("a", CacheEntry([[1]], None))
    c.start_prompt({"a", "b"}, {})
    assert c.get("a") is not None
    c.start_prompt({"b"}, {})
    assert c.get("a") is None


def test_lru_cache_evicts_old_generations():
    c = LRUOutputCache(2)
    for i, key in enumerate(["a", "b", "c"]):
        c.start_prompt({key}, {})
        c.set(key, CacheEntry([[i]], None))
    assert c.get("a") is None and c.get("b") is not None and c.get("c") is not None


# --- scheduling order ------------------------------------------------------------------------------

def test_scheduling_prefers_outputs(registry):
    prompt = {"1": {"class_type": "TestValue", "inputs": {"value": 1}}, "2": out(["1", 0]),
              "3": {"class_type": "TestValue", "inputs": {"value": 2}},
              "4": {"class_type": "TestAdd", "inputs": {"a": ["3", 0], "b": 1}}, "5": out(["4", 0])}
    defs = NodeDefs(registry)
    dp = DynamicPrompt(prompt)

    async def order():
        done: set[str] = set()
        el = ExecutionList(dp, done.__contains__, lambda n: defs.get(dp.get_node(n)["class_type"]))
        for o in ("2", "5"):
            el.add_node(o)
        seq = []
        while not el.is_empty():
            n, err = await el.stage_node_execution()
            assert err is None
            seq.append(n)
            el.complete_node_execution()
        return seq

    assert asyncio.run(order()) == ["1", "2", "3", "4", "5"]


# --- graph utils ----------------------------------------------------------------------------------------

def test_graph_builder_prefix_and_links():
    GraphBuilder.set_default_prefix("12", 0, 0)
    g = GraphBuilder()
    a = g.node("TestValue", value=1)
    b = g.node("TestAdd", a=a.out(0), b=1)
    assert a.id == "12.0.0.1" and b.inputs["a"] == ["12.0.0.1", 0]
    assert GraphBuilder().prefix == "12.0.1."
    graph, outs = add_graph_prefix({"x": {"class_type": "T", "inputs": {"i": ["x", 0]}}}, [["x", 0]], "p.")
    assert graph == {"p.x": {"class_type": "T", "inputs": {"i": ["p.x", 0]}}} and outs == (["p.x", 0],)
    assert is_link(["1", 0]) and not is_link(["1", 0.5]) and not is_link([1, 0]) and not is_link(["1", True])
