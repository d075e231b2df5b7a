"""V3 dynamic inputs over a real server: Autogrow, DynamicCombo, MatchType and MultiCombo.

The ``/object_info`` entries, the prompt's dotted input names and the values
``execute`` receives follow ComfyUI's shapes.
"""

from __future__ import annotations

from typing import Any

from .execution_helpers import OUT, V


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def shown(client: Any, prompt: dict[str, Any], output_id: str = "9") -> str:
    res = client.run(prompt)
    assert res.error is None, res.error
    return client.history(res.prompt_id)["outputs"][output_id]["text"][0]


def rejected(client: Any, prompt: dict[str, Any], node_id: str) -> list[dict[str, Any]]:
    r = client.queue(prompt)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    return body["node_errors"][node_id]["errors"]


def info(server: Any, name: str) -> dict[str, Any]:
    return server.get(f"/object_info/{name}").json()[name]


# --- /object_info -------------------------------------------------------------------------


def test_autogrow_object_info(exec_server):
    entry = info(exec_server, "TestAutogrowSum")
    assert entry["input"]["required"]["values"] == ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {"value": ["INT", {"forceInput": True, "min": 0, "max": 100}]}},
        "prefix": "value", "min": 2, "max": 4}}]
    assert entry["input_order"] == {"required": ["values"]}
    names = info(exec_server, "TestAutogrowNames")["input"]["required"]["words"]
    assert names == ["COMFY_AUTOGROW_V3", {"template": {
        "input": {"required": {"word": ["STRING", {"forceInput": True, "multiline": False}]}},
        "names": ["first", "second"], "min": 0}}]


def test_dynamic_combo_object_info(exec_server):
    spec = info(exec_server, "TestDynamicCombo")["input"]["required"]["mode"]
    assert spec == ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "add", "inputs": {"required": {"a": ["INT", {}], "b": ["INT", {"default": 1, "max": 10}]}}},
        {"key": "text", "inputs": {"required": {"text": ["STRING", {"multiline": True}]}}},
        {"key": "none", "inputs": {"required": {}}}]}]


def test_match_type_object_info(exec_server):
    entry = info(exec_server, "TestMatchType")
    assert entry["input"]["required"]["value"] == ["COMFY_MATCHTYPE_V3", {
        "template": {"template_id": "T", "allowed_types": "INT,STRING"}}]
    assert entry["output"] == ["COMFY_MATCHTYPE_V3"]
    assert entry["output_name"] == ["MATCHTYPE"]
    assert entry["output_matchtypes"] == ["T"]
    assert "output_matchtypes" not in info(exec_server, "TestAutogrowSum")


def test_multi_combo_object_info(exec_server):
    spec = info(exec_server, "TestMultiCombo")["input"]["required"]["colors"]
    assert spec == ["COMBO", {"default": ["red"], "options": ["red", "green", "blue"], "multiselect": True,
                              "multi_select": {"placeholder": "Pick colors", "chip": True}}]


# --- execution ----------------------------------------------------------------------------


def test_autogrow_inputs_reach_execute_grouped(client):
    prompt = {"1": V(3), "2": V(4), "3": V(5),
              "4": node("TestAutogrowSum", **{"values.value0": ["1", 0], "values.value1": ["2", 0],
                                             "values.value2": ["3", 0]}),
              "9": OUT(["4", 0])}
    assert shown(client, prompt) == repr("[('value0', 3), ('value1', 4), ('value2', 5)] sum=12")


def test_autogrow_constants_and_undeclared_names(client):
    # Constants are validated against the template; a name outside it is ignored, as ComfyUI does.
    prompt = {"4": node("TestAutogrowSum", **{"values.value0": 1, "values.value1": "2", "values.extra": 7}),
              "9": OUT(["4", 0])}
    assert shown(client, prompt) == repr("[('value0', 1), ('value1', 2)] sum=3")
    prompt["4"]["inputs"]["values.value1"] = 101
    errors = rejected(client, prompt, "4")
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [
        ("value_bigger_than_max", "values.value1")]


def test_autogrow_empty_group_is_a_dict(client):
    prompt = {"4": node("TestAutogrowNames", sep="!"), "9": OUT(["4", 0])}
    assert shown(client, prompt) == repr("[]!")
    prompt["4"]["inputs"]["words.second"] = "b"
    assert shown(client, prompt) == repr("[('second', 'b')]!")


def test_autogrow_missing_required_template_input(client):
    prompt = {"1": V(3), "4": node("TestAutogrowSum", **{"values.value0": ["1", 0], "values.valu1": ["1", 0]}),
              "9": OUT(["4", 0])}
    errors = rejected(client, prompt, "4")
    assert errors == [{"type": "required_input_missing", "message": "Required input is missing",
                       "details": "value1", "extra_info": {"input_name": "values.value1"}}]


def test_autogrow_ungrouped_input_name_is_rejected(client):
    prompt = {"1": V(3), "4": node("TestAutogrowSum", value0=["1", 0], value1=["1", 0]), "9": OUT(["4", 0])}
    errors = rejected(client, prompt, "4")
    assert sorted(e["extra_info"]["input_name"] for e in errors) == ["values.value0", "values.value1"]
    assert {e["type"] for e in errors} == {"required_input_missing"}


def test_dynamic_combo_option_inputs_reach_execute(client):
    prompt = {"1": V(7), "4": node("TestDynamicCombo", mode="add", scale=2, **{"mode.a": ["1", 0], "mode.b": 3}),
              "9": OUT(["4", 0])}
    assert shown(client, prompt) == repr("[('a', 7), ('b', 3), ('mode', 'add')] scale=2")
    # Constants of an option that is not selected do not reach execute.
    prompt["4"]["inputs"] = {"mode": "text", "scale": 2, "mode.text": "hi", "mode.b": 3}
    assert shown(client, prompt) == repr("[('mode', 'text'), ('text', 'hi')] scale=2")
    prompt["4"]["inputs"] = {"mode": "none", "scale": 1}
    assert shown(client, prompt) == repr("[('mode', 'none')] scale=1")


def test_dynamic_combo_missing_option_input(client):
    prompt = {"4": node("TestDynamicCombo", mode="add", scale=1, **{"mode.b": 3, "a": 1}), "9": OUT(["4", 0])}
    errors = rejected(client, prompt, "4")
    assert errors == [{"type": "required_input_missing", "message": "Required input is missing",
                       "details": "a", "extra_info": {"input_name": "mode.a"}}]
    prompt["4"]["inputs"].update({"mode.a": 1, "mode.b": 11})
    errors = rejected(client, prompt, "4")
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("value_bigger_than_max", "mode.b")]


def test_dynamic_combo_without_a_known_option(client):
    prompt = {"4": node("TestDynamicCombo", scale=1), "9": OUT(["4", 0])}
    errors = rejected(client, prompt, "4")
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("required_input_missing", "mode")]
    prompt["4"]["inputs"]["mode"] = "multiply"
    errors = rejected(client, prompt, "4")
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("value_not_in_list", "mode")]
    assert errors[0]["details"] == "mode: 'multiply' not in ['add', 'text', 'none']"


def test_match_type_links_any_type(client):
    prompt = {"1": V(5), "2": node("TestMatchType", value=["1", 0]), "3": node("TestAdd", a=["2", 0], b=["1", 0]),
              "9": OUT(["3", 0])}
    assert shown(client, prompt) == "10"


def test_a_wrapped_list_of_objects_is_not_taken_for_a_link(client):
    # Validating the first output unwraps the constant in place; walking the second output's
    # dependencies must not read [{...}, {...}] as a link (it used to fail with a 500).
    prompt = {"4": node("TestMultiCombo", colors={"__value__": [{"x": 1}, {"y": 2}]}), "9": OUT(["4", 0]),
              "10": OUT(["4", 0])}
    assert [e["type"] for e in rejected(client, prompt, "4")] == ["value_not_in_list"]


def test_multi_combo_values(client):
    prompt = {"4": node("TestMultiCombo", colors={"__value__": ["blue", "red"]}), "9": OUT(["4", 0])}
    assert shown(client, prompt) == repr("blue+red")
    prompt["4"]["inputs"]["colors"] = {"__value__": ["red", "pink", "teal"]}
    errors = rejected(client, prompt, "4")
    assert [(e["type"], e["details"]) for e in errors] == [
        ("value_not_in_list", "colors: 'pink', 'teal' not in ['red', 'green', 'blue']")]
