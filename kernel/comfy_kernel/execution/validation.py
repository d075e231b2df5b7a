"""Prompt validation (spec §4): the checks, their order and their exact error objects.

Validation walks each output's ancestry iteratively (an explicit stack, no
recursion), so a deep graph cannot overflow the stack and a static cycle is
found and reported as a ``dependency_cycle`` node error instead of a crash.
Nodes are validated dependencies-first and memoised across outputs, so the
cost is O(nodes + edges). The submitted prompt is converted in place
(``__value__`` unwrapped, INT/FLOAT/STRING/BOOLEAN coerced), as ComfyUI does.
"""

from __future__ import annotations

import gc
import inspect
import traceback
from typing import Any

from ..nodes.graph_utils import ExecutionBlocker, is_link
from ..nodes.io import DYNAMIC_COMBO, MATCH_TYPE
from .loops import LoopError, boundaries, find_loops
from .nodeclass import NodeDef, NodeDefs


def validate_node_input(received_type: Any, input_type: Any, strict: bool = False) -> bool:
    """The link type predicate of spec §2.4 (``!=`` on the declared objects first)."""
    if not received_type != input_type:
        return True
    if not isinstance(received_type, str) or not isinstance(input_type, str):
        return False
    if MATCH_TYPE in (str(received_type), str(input_type)):  # the frontend checks template types
        return True
    received = {t.strip() for t in received_type.split(",")}
    accepted = {t.strip() for t in input_type.split(",")}
    if strict:
        return received <= accepted
    return bool(received & accepted)


def exception_type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", None) else f"{module}.{cls.__qualname__}"


def _error(type: str, message: str, details: str, extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": type, "message": message, "details": details, "extra_info": extra_info or {}}


def _config(spec: Any) -> list[Any]:
    return [spec[0], spec[1] if len(spec) > 1 else {}] if isinstance(spec, (list, tuple)) else [spec, {}]


class _Raised:
    """A node whose own validation raised (missing source node, bad slot...)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class Validator:
    def __init__(self, prompt: dict[str, Any], defs: NodeDefs):
        self.prompt = prompt
        self.defs = defs
        # node id -> (valid, reasons) | _Raised
        self.memo: dict[str, Any] = {}

    # -- graph walk ------------------------------------------------------------------

    def _sources(self, node_id: str) -> list[str]:
        node = self.prompt.get(node_id)
        ndef = self.defs.get(node["class_type"]) if isinstance(node, dict) else None
        if ndef is None:
            return []
        out = []
        inputs = node.get("inputs") or {}
        for name in ndef.expand(inputs).declared:
            value = inputs.get(name)
            if is_link(value) and value[0] in self.prompt:  # an unwrapped ``__value__`` list is not a link
                out.append(value[0])
        return out

    def order_from(self, output_id: str) -> tuple[list[str], list[str] | None]:
        """Post-order of the output's ancestry, and a cycle (list of ids) if one exists."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = on stack, 2 = done
        stack: list[tuple[str, list[str]]] = [(output_id, self._sources(output_id))]
        state[output_id] = 1
        path = [output_id]
        while stack:
            node_id, children = stack[-1]
            if children:
                child = children.pop()
                st = state.get(child)
                if st == 1:
                    return order, path[path.index(child):]
                if st is None:
                    state[child] = 1
                    path.append(child)
                    stack.append((child, self._sources(child)))
                continue
            stack.pop()
            path.pop()
            state[node_id] = 2
            order.append(node_id)
        return order, None

    # -- one node ------------------------------------------------------------------------

    async def validate_node(self, node_id: str) -> None:
        if node_id in self.memo:
            return
        try:
            self.memo[node_id] = await self._validate(node_id)
        except Exception as exc:  # recorded by the consumer or the output
            self.memo[node_id] = _Raised(exc)

    async def _validate(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        prompt = self.prompt
        node = prompt[node_id]
        inputs = node["inputs"] if isinstance(node.get("inputs"), dict) else node.setdefault("inputs", {})
        ndef: NodeDef = self.defs.get(node["class_type"])  # type: ignore[assignment]
        errors: list[dict[str, Any]] = []
        valid = True
        received_types: dict[str, Any] = {}
        hook_params = ndef.validate_params
        hook_kwargs = ndef.validate_kwargs
        expanded = ndef.expand(inputs)
        for name, (_section, spec) in expanded.declared.items():
            if name not in inputs:
                if _section == "required":
                    details = name.rsplit(".", 1)[-1] if expanded.paths else name
                    errors.append(_error("required_input_missing", "Required input is missing", details,
                                         {"input_name": name}))
                continue
            value = inputs[name]
            input_type = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(value, list):
                if len(value) != 2:
                    errors.append(_error("bad_linked_input",
                                         "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                         name, {"input_name": name, "input_config": _config(spec),
                                                "received_value": value}))
                    continue
                src_id, slot = value
                src_node = prompt[src_id]  # KeyError for a missing node: raised out of this node
                src_def = self.defs.get(src_node["class_type"])
                if src_def is None:
                    raise KeyError(src_node["class_type"])
                r_type = src_def.cls.RETURN_TYPES[slot]
                received_types[name] = r_type
                if not ndef.validate_input_types and not validate_node_input(r_type, input_type):
                    details = f"{name}, received_type({r_type}) mismatch input_type({input_type})"
                    errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                         details, {"input_name": name, "input_config": _config(spec),
                                                   "received_type": r_type, "linked_node": value}))
                    continue
                src_result = self.memo.get(src_id)
                if src_result is None:
                    await self.validate_node(src_id)
                    src_result = self.memo[src_id]
                if isinstance(src_result, _Raised):
                    exc = src_result.exc
                    self.memo[src_id] = (False, [_error(
                        "exception_during_inner_validation", "Exception when validating inner node", str(exc),
                        {"input_name": name, "input_config": _config(spec), "exception_message": str(exc),
                         "exception_type": exception_type_name(exc),
                         "traceback": traceback.format_tb(exc.__traceback__), "linked_node": value})])
                    valid = False
                elif not src_result[0]:
                    valid = False
                continue
            # a constant
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
                inputs[name] = value
            try:
                if input_type == "INT":
                    value = int(value)
                elif input_type == "FLOAT":
                    value = float(value)
                elif input_type == "STRING":
                    value = str(value)
                elif input_type == "BOOLEAN":
                    value = bool(value)
                inputs[name] = value
            except Exception as exc:
                errors.append(_error("invalid_input_type",
                                     f"Failed to convert an input value to a {input_type} value",
                                     f"{name}, {value}, {exc}",
                                     {"input_name": name, "input_config": _config(spec), "received_value": value,
                                      "exception_message": str(exc)}))
                continue
            if name in hook_params or hook_kwargs:
                continue
            if "min" in opts and _lt(value, opts["min"]):
                errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}",
                                     name, {"input_name": name, "input_config": _config(spec),
                                            "received_value": value}))
                continue
            if "max" in opts and _lt(opts["max"], value):
                errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}",
                                     name, {"input_name": name, "input_config": _config(spec),
                                            "received_value": value}))
                continue
            choices = input_type if isinstance(input_type, list) else _v3_combo_options(input_type, opts)
            if choices is None:
                continue
            if opts.get("multiselect") and isinstance(value, list):
                bad = ", ".join(repr(v) for v in value if v not in choices)
            else:
                bad = "" if value in choices else f"'{value}'"
            if bad:
                shown = f"(list of length {len(choices)})" if len(choices) > 20 else repr(choices)
                errors.append(_error("value_not_in_list", "Value not in list", f"{name}: {bad} not in {shown}",
                                     {"input_name": name,
                                      "input_config": None if len(choices) > 20 else _config(spec),
                                      "received_value": value}))
                continue

        if ndef.validate is not None:
            errors.extend(await self._custom(node_id, ndef, inputs, received_types, expanded.declared,
                                             expanded.paths))
        ok = valid and not errors
        return ok, errors

    async def _custom(self, node_id: str, ndef: NodeDef, inputs: dict[str, Any], received_types: dict[str, Any],
                      declared: dict[str, Any], paths: dict[str, str]) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        for name, value in inputs.items():
            if name in declared or name in ndef.hidden:
                kwargs[name] = None if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
                    else value
        hidden = ndef.hidden_values(node_id, None)
        if not ndef.is_v3:
            kwargs.update(hidden)
        if not ndef.validate_kwargs:
            kwargs = {k: v for k, v in kwargs.items() if paths.get(k, k).split(".")[0] in ndef.validate_params}
        if ndef.validate_input_types:
            kwargs["input_types"] = received_types
        if ndef.input_is_list:
            kwargs = {k: [v] for k, v in kwargs.items()}
        fn = ndef.bind("validate", None, hidden)
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        errors = []
        if result is not True and not isinstance(result, ExecutionBlocker):
            for name in kwargs:
                details = name if result is False else f"{name} - {result}"
                errors.append(_error("custom_validation_failed", "Custom validation failed for node", details,
                                     {"input_name": name}))
        return errors


def _v3_combo_options(input_type: Any, opts: dict[str, Any]) -> list[Any] | None:
    """A V3 combo's choices (its type is ``COMBO``, the list is in ``options``); None for any other input.

    A DynamicCombo's choices are its options' keys.
    """
    if not isinstance(input_type, str) or not isinstance(opts.get("options"), list):
        return None
    if str.__eq__(input_type, "COMBO") and not opts.get("remote_combo"):
        return opts["options"]
    if str.__eq__(input_type, DYNAMIC_COMBO):
        return [option["key"] for option in opts["options"]]
    return None


def _lt(a: Any, b: Any) -> bool:
    return a < b


async def validate_prompt(prompt: Any, registry: Any, partial_execution_targets: list[str] | None = None,
                          defs: NodeDefs | None = None) -> tuple[bool, dict[str, Any] | None, list[str],
                                                                 dict[str, Any]]:
    """Returns ``(valid, error, outputs_to_execute, node_errors)`` (spec §4.2).

    The cyclic garbage collector is paused meanwhile: validation creates no
    reference cycles, and on big graphs the collector's repeated passes over
    the prompt's many fresh containers made the time grow faster than the graph.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return await _validate_prompt(prompt, registry, partial_execution_targets, defs)
    finally:
        if paused:
            gc.enable()


async def _validate_prompt(prompt: Any, registry: Any, partial_execution_targets: list[str] | None,
                           defs: NodeDefs | None) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    defs = defs or NodeDefs(registry)
    outputs: list[str] = []
    if not isinstance(prompt, dict):
        return False, _error("invalid_prompt", "Cannot execute because the prompt is not an object.", ""), [], {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return False, _error("invalid_prompt",
                                 "Cannot execute because a node is missing the class_type property.",
                                 f"Node ID '#{node_id}'"), [], {}
        class_type = node["class_type"]
        ndef = defs.get(class_type) if isinstance(class_type, str) else None
        if ndef is None:
            return False, _error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                 f"Node ID '#{node_id}'"), [], {}
        if not isinstance(node.get("inputs"), dict):
            node["inputs"] = {}
        if ndef.is_output and (partial_execution_targets is None or node_id in partial_execution_targets):
            outputs.append(node_id)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
    marks = boundaries(prompt, defs.loop_boundary)
    if marks:
        try:
            find_loops(prompt, marks)
        except LoopError as exc:
            reason = _error("invalid_loop", "Loop nodes do not form a loop", str(exc))
            return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                 f"{reason['message']}: {reason['details']}"), [], {
                exc.node_id: {"errors": [reason], "dependent_outputs": outputs,
                              "class_type": prompt[exc.node_id]["class_type"]}}

    v = Validator(prompt, defs)
    good: list[str] = []
    errors: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for out in outputs:
        order, cycle = v.order_from(out)
        reasons: list[dict[str, Any]] = []
        if cycle is not None:
            blamed = cycle[0]
            entry = node_errors.setdefault(blamed, {"errors": [_error(
                "dependency_cycle", "Dependency cycle detected", " -> ".join(cycle + [cycle[0]]),
                {"cycle": cycle})], "dependent_outputs": [], "class_type": prompt[blamed]["class_type"]})
            entry["dependent_outputs"].append(out)
            errors.append((out, []))
            continue
        try:
            for node_id in order:
                await v.validate_node(node_id)
            result = v.memo[out]
            if isinstance(result, _Raised):
                exc = result.exc
                reasons = [_error("exception_during_validation", "Exception when validating node", str(exc),
                                  {"exception_type": exception_type_name(exc),
                                   "traceback": traceback.format_tb(exc.__traceback__)})]
                v.memo[out] = (False, reasons)
                ok = False
            else:
                ok, reasons = result
        except Exception as exc:
            reasons = [_error("exception_during_validation", "Exception when validating node", str(exc),
                              {"exception_type": exception_type_name(exc),
                               "traceback": traceback.format_tb(exc.__traceback__)})]
            v.memo[out] = (False, reasons)
            ok = False
        if ok:
            good.append(out)
            continue
        errors.append((out, reasons))
        # Q11 fixed: report the output only on nodes it actually depends on.
        for node_id in order:
            res = v.memo.get(node_id)
            if isinstance(res, tuple) and not res[0] and res[1]:
                entry = node_errors.get(node_id)
                if entry is None:
                    entry = node_errors[node_id] = {"errors": res[1], "dependent_outputs": [],
                                                    "class_type": prompt[node_id]["class_type"]}
                if out not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(out)

    if not good:
        lines = []
        for _out, reasons in errors:
            for reason in reasons:
                lines.append(f"{reason['message']}: {reason['details']}")
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                             "\n".join(lines)), [], node_errors
    return True, None, good, node_errors
