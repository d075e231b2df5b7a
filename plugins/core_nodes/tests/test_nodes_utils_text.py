"""Primitives, string, logic, math, list and conditioning-area nodes.

String results and conditioning options are compared with ComfyUI 0.3.64's
(``data/latent_utils/expected.json``); the newer nodes with what their
ComfyUI definitions describe. Each group also runs through a real server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_kernel_core_nodes import expression
from comfy_kernel_core_nodes.nodes import logic, strings

EXPECTED = json.loads((Path(__file__).parent / "data" / "latent_utils" / "expected.json").read_text())
TEXT = EXPECTED["strings_input"]
WANT = EXPECTED["strings"]


def one(cls, **kw):
    return cls.execute(**kw).args[0]


def flags(**kw):
    return {"case_insensitive": True, "multiline": False, "dotall": False, **kw}


def test_string_nodes_match_comfyui():
    got = {
        "concat": one(strings.StringConcatenate, string_a="ab", string_b="cd", delimiter="-"),
        "substring": one(strings.StringSubstring, string=TEXT, start=2, end=-5),
        "length": one(strings.StringLength, string=TEXT),
        "replace": one(strings.StringReplace, string=TEXT, find="l", replace="L"),
        "contains_cs": one(strings.StringContains, string=TEXT, substring="hello", case_sensitive=True),
        "contains_ci": one(strings.StringContains, string=TEXT, substring="HELLO W", case_sensitive=False),
        "regex_match": one(strings.RegexMatch, string=TEXT, regex_pattern=r"comfy\s+\d+", **flags()),
        "regex_match_bad": one(strings.RegexMatch, string=TEXT, regex_pattern="(", **flags()),
        "extract_nums": one(strings.RegexExtract, string=TEXT, regex_pattern=r"\d+", mode="All Matches",
                            group_index=1, **flags()),
        "regex_replace": one(strings.RegexReplace, string=TEXT, regex_pattern=r"(\d+)", replace=r"<\1>",
                             count=1, **flags()),
        "regex_replace_all": one(strings.RegexReplace, string=TEXT, regex_pattern="hello", replace="bye"),
    }
    for mode in ("UPPERCASE", "lowercase", "Capitalize", "Title Case"):
        got[f"case_{mode}"] = one(strings.CaseConverter, string=TEXT, mode=mode)
    for mode in ("Both", "Left", "Right"):
        got[f"trim_{mode}"] = one(strings.StringTrim, string=TEXT, mode=mode)
    for mode in ("Starts With", "Ends With", "Equal"):
        got[f"compare_{mode}"] = one(strings.StringCompare, string_a="Hello", string_b="hello", mode=mode,
                                     case_sensitive=False)
    for mode in ("First Match", "All Matches", "First Group", "All Groups"):
        got[f"extract_{mode}"] = one(strings.RegexExtract, string=TEXT, regex_pattern=r"(\w)(\d+)?o", mode=mode,
                                     group_index=1, **flags())
    assert got == WANT


def test_newer_text_nodes():
    assert one(strings.StringFormat, values={"a": 3, "b": "x"}, f_string="{a:03d}-{b}") == "003-x"
    assert one(strings.StringFormat, values={"a": 1.5}, f_string="{a.real} {a!r:>5}") == "1.5   1.5"
    with pytest.raises(ValueError, match="private"):
        one(strings.StringFormat, values={"a": 1}, f_string="{a.__class__.__init__.__globals__}")
    fenced = 'Reply:\n```json\n{"name": "cat", "n": 2, "none": null}\n```'
    assert one(strings.JsonExtractString, json_string=fenced, key="n") == "2"
    assert one(strings.JsonExtractString, json_string=fenced, key="none") == ""
    assert one(strings.JsonExtractString, json_string="{broken {\"k\": [1]}", key="k") == "[1]"
    assert one(strings.ConvertDictionaryToString, dictionary={"é": [1, 2]}, indent=0) == '{"é": [1, 2]}'
    assert one(strings.ConvertArrayToString, array=[1, {"a": 2}], indent=2) == '[\n  1,\n  {\n    "a": 2\n  }\n]'


def test_math_expression():
    out = logic.ComfyMathExpression.execute(expression="(a + b) / 2 if c else -1", values={"a": 3, "b": 4, "c": True})
    assert out.args == (3.5, 3, True)
    assert logic.ComfyMathExpression.execute(expression="sum(values) + max(a, b) ** 2",
                                             values={"a": 1, "b": 2.5}).args[0] == 9.75
    assert logic.ComfyMathExpression.execute(expression="floor(sqrt(a)) % 3", values={"a": 17}).args[1] == 1
    with pytest.raises(ValueError, match="numeric"):
        logic.ComfyMathExpression.execute(expression="values", values={"a": 1})
    with pytest.raises(ValueError, match="non-finite"):
        logic.ComfyMathExpression.execute(expression="a * 1e308 * 10", values={"a": 1.0})
    with pytest.raises(ValueError, match="empty"):
        logic.ComfyMathExpression.execute(expression="  ", values={})


@pytest.mark.parametrize("source", [
    "__import__('os').system('true')", "a.__class__", "(lambda: 1)()", "[x for x in values]", "open('f')",
    "9 ** 9 ** 9", "pow(2, 100000)", "exec('1')", "a[0:1]", "f'{a}'",
])
def test_math_expression_refuses_unsafe_input(source):
    with pytest.raises((expression.ExpressionError, TypeError)):
        expression.evaluate(source, {"a": 1, "values": [1]})


def test_number_convert_and_seed():
    assert logic.convert_number(True) == (1.0, 1)
    assert logic.convert_number(" 7 ") == (7.0, 7)
    assert logic.convert_number("2.9") == (2.9, 2)
    assert logic.convert_number(-3.7) == (-3.7, -3)
    for bad in ("", "abc", "inf"):
        with pytest.raises(ValueError):
            logic.convert_number(bad)
    assert one(logic.SeedNode, seed=123) == 123


def test_switch_lazy_status():
    assert logic.ComfySwitchNode.check_lazy_status(switch=True, on_false=None, on_true=None) == ["on_true"]
    assert logic.ComfySwitchNode.check_lazy_status(switch=False, on_false=None) == ["on_false"]
    assert logic.ComfySwitchNode.execute(switch=True).args == (None,)


def test_primitives_strings_and_logic_through_the_server(graph_server):
    def probe(node: str, slot: int, name: str) -> dict:
        return {"class_type": "TestProbe", "inputs": {"value": [node, slot], "name": name}}

    prompt = {
        "s": {"class_type": "PrimitiveString", "inputs": {"value": TEXT}},
        "ml": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a\nb"}},
        "i": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        "f": {"class_type": "PrimitiveFloat", "inputs": {"value": 2.5}},
        "b": {"class_type": "PrimitiveBoolean", "inputs": {"value": False}},
        "up": {"class_type": "CaseConverter", "inputs": {"string": ["s", 0], "mode": "UPPERCASE"}},
        "trim": {"class_type": "StringTrim", "inputs": {"string": ["up", 0], "mode": "Both"}},
        "cat": {"class_type": "StringConcatenate", "inputs": {"string_a": ["trim", 0], "string_b": ["ml", 0],
                                                              "delimiter": "|"}},
        "len": {"class_type": "StringLength", "inputs": {"string": ["cat", 0]}},
        "sub": {"class_type": "StringSubstring", "inputs": {"string": ["s", 0], "start": 2, "end": -5}},
        "rep": {"class_type": "StringReplace", "inputs": {"string": ["s", 0], "find": "l", "replace": "L"}},
        "has": {"class_type": "StringContains", "inputs": {"string": ["s", 0], "substring": "HELLO W",
                                                           "case_sensitive": False}},
        "cmp": {"class_type": "StringCompare", "inputs": {"string_a": "Hello", "string_b": "hello",
                                                          "mode": "Equal", "case_sensitive": False}},
        "rm": {"class_type": "RegexMatch", "inputs": {"string": ["s", 0], "regex_pattern": r"comfy\s+\d+",
                                                      "case_insensitive": True, "multiline": False, "dotall": False}},
        "rx": {"class_type": "RegexExtract", "inputs": {"string": ["s", 0], "regex_pattern": r"(\w)(\d+)?o",
                                                        "mode": "All Groups", "case_insensitive": True,
                                                        "multiline": False, "dotall": False, "group_index": 1}},
        "rr": {"class_type": "RegexReplace", "inputs": {"string": ["s", 0], "regex_pattern": r"(\d+)",
                                                        "replace": r"<\1>", "count": 1}},
        "fmt": {"class_type": "StringFormat", "inputs": {"values.a": ["i", 0], "values.b": ["f", 0],
                                                         "f_string": "{a}x{b:.2f}"}},
        "json": {"class_type": "JsonExtractString", "inputs": {"json_string": '{"k": 4}', "key": "k"}},
        "math": {"class_type": "ComfyMathExpression", "inputs": {"expression": "a * b + c", "values.a": ["i", 0],
                                                                 "values.b": ["f", 0], "values.c": ["b", 0]}},
        "conv": {"class_type": "ComfyNumberConvert", "inputs": {"value": ["json", 0]}},
        "seed": {"class_type": "SeedNode", "inputs": {"seed": 99}},
        "not": {"class_type": "ComfyNotNode", "inputs": {"value": ["b", 0]}},
        "and": {"class_type": "ComfyAndNode", "inputs": {"values.value0": ["not", 0], "values.value1": ["i", 0]}},
        "or": {"class_type": "ComfyOrNode", "inputs": {"values.value0": ["b", 0], "values.value1": ["b", 0]}},
        "pass": {"class_type": "ComfyPassOrNoneNode", "inputs": {"default": ["s", 0]}},
        "combo": {"class_type": "CustomCombo", "inputs": {"choice": "my own option", "index": 2,
                                                          "option0": "x", "option2": "my own option"}},
    }
    probes = {"sub": 0, "rep": 0, "has": 0, "cmp": 0, "rm": 0, "rx": 0, "rr": 0, "len": 0, "fmt": 0, "json": 0,
              "math": 0, "conv": 1, "seed": 0, "and": 0, "or": 0, "pass": 0}
    for node, slot in probes.items():
        prompt[f"p_{node}"] = probe(node, slot, node)
    prompt["p_math_int"] = probe("math", 1, "math_int")
    prompt["p_pass_none"] = probe("pass", 1, "pass_none")
    prompt["p_combo"] = probe("combo", 0, "combo")
    prompt["p_combo_index"] = probe("combo", 1, "combo_index")
    out = graph_server.run(prompt)
    assert out["sub"] == WANT["substring"] and out["rep"] == WANT["replace"] and out["has"] is True
    assert out["cmp"] is True and out["rm"] is True and out["rx"] == WANT["extract_All Groups"]
    assert out["rr"] == WANT["regex_replace"]
    assert out["len"] == len(TEXT.strip()) + len("|a\nb")
    assert out["fmt"] == "5x2.50" and out["json"] == "4" and out["conv"] == 4
    assert out["math"] == 12.5 and out["math_int"] == 12 and out["seed"] == 99
    assert out["and"] is True and out["or"] is False
    assert out["pass"] == TEXT and out["pass_none"] is False
    assert out["combo"] == "my own option" and out["combo_index"] == 2


def test_switch_runs_only_the_chosen_branch(graph_server):
    prompt = {
        "flag": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
        "yes": {"class_type": "PrimitiveString", "inputs": {"value": "yes"}},
        # the unchosen branch would fail if it ran (an invalid regex raises in RegexReplace)
        "boom": {"class_type": "RegexReplace", "inputs": {"string": "x", "regex_pattern": "(", "replace": ""}},
        "sw": {"class_type": "ComfySwitchNode", "inputs": {"switch": ["flag", 0], "on_true": ["yes", 0],
                                                           "on_false": ["boom", 0]}},
        "p": {"class_type": "TestProbe", "inputs": {"value": ["sw", 0], "name": "switched"}},
    }
    assert graph_server.run(prompt)["switched"] == "yes"
    prompt["flag"]["inputs"]["value"] = False
    assert graph_server.error(prompt)["node_id"] == "boom"  # now the failing branch is chosen, so it runs


def test_lists_through_the_server(graph_server):
    prompt = {
        "x": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
        "y": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
        "z": {"class_type": "PrimitiveString", "inputs": {"value": "three"}},
        "list": {"class_type": "CreateList", "inputs": {"inputs.input0": ["x", 0], "inputs.input1": ["y", 0],
                                                        "inputs.input2": ["z", 0]}},
        "all": {"class_type": "TestProbeList", "inputs": {"value": ["list", 0], "name": "item"}},
        "last": {"class_type": "GetItemFromList", "inputs": {"list": ["list", 0], "index": -1}},
        "p": {"class_type": "TestProbe", "inputs": {"value": ["last", 0], "name": "last"}},
    }
    out = graph_server.run(prompt)
    assert [out[f"item_{i}"] for i in range(3)] == [1, 2, "three"]
    assert out["last"] == "three"


def test_conditioning_area_options_match_comfyui(graph_server):
    def node(cls: str, **inputs) -> dict:
        return {"class_type": cls, "inputs": {"conditioning": ["c", 0], **inputs}}

    prompt = {
        "c": {"class_type": "TestConditioning", "inputs": {"value": 1.0, "tokens": 3}},
        "pct": node("ConditioningSetAreaPercentage", width=0.5, height=0.25, x=0.1, y=0.2, strength=1.5),
        "strength": node("ConditioningSetAreaStrength", strength=2.5),
        "range": node("ConditioningSetTimestepRange", start=0.2, end=0.7),
        "video": node("ConditioningSetAreaPercentageVideo", width=0.5, height=0.25, temporal=0.75, x=0.1, y=0.2,
                      z=0.3, strength=0.9),
        "orig": {"class_type": "TestProbe", "inputs": {"value": ["c", 0], "name": "orig"}},
    }
    for name in ("pct", "strength", "range", "video"):
        prompt[f"p_{name}"] = {"class_type": "TestProbe", "inputs": {"value": [name, 0], "name": name}}
    out = graph_server.run(prompt)
    for name in ("pct", "strength", "range", "video"):
        (entry,) = out[name]
        options = dict(entry["options"])
        assert options.pop("pooled_output") == {"tensor_shape": [1, 768], "mean": 1.0}
        assert options == EXPECTED[f"cond_{name}"], name
        assert entry["shape"] == [1, 3, 768]
    assert list(out["orig"][0]["options"]) == ["pooled_output"]  # the source entry is not modified
