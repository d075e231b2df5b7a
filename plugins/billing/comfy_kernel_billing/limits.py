"""Plan limits that can be read off a prompt without running it: image size and batch size.

A node whose literal inputs ask for ``width`` x ``height`` pixels above the
plan's ``max_pixels``, or a ``batch_size`` (also ``batch``, ``amount``)
above its ``max_batch``, is reported in ComfyUI's ``node_errors`` shape so
the frontend marks that node. Values that arrive through links are only
known at run time and are not checked: this is the cheap check the plan
file promises, not a sandbox.
"""

from __future__ import annotations

from typing import Any

BATCH_INPUTS = ("batch_size", "batch", "amount")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check(prompt: dict[str, Any], plan: Any) -> dict[str, Any]:
    node_errors: dict[str, Any] = {}
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        errors = []
        width, height = _int(inputs.get("width")), _int(inputs.get("height"))
        if plan.max_pixels and width is not None and height is not None and width * height > plan.max_pixels:
            errors.append(_error("width", f"{width}x{height} is {width * height} pixels; the plan allows "
                                          f"{plan.max_pixels}", width))
        if plan.max_batch:
            for name in BATCH_INPUTS:
                value = _int(inputs.get(name))
                if value is not None and value > plan.max_batch:
                    errors.append(_error(name, f"{name} {value} is above the plan's {plan.max_batch}", value))
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": [],
                                    "class_type": node.get("class_type")}
    return node_errors


def _error(name: str, details: str, value: Any) -> dict[str, Any]:
    return {"type": "plan_limit", "message": "Exceeds the plan's limits", "details": details,
            "extra_info": {"input_name": name, "received_value": value}}


def describe(plan: Any) -> str:
    parts = []
    if plan.max_pixels:
        parts.append(f"{plan.max_pixels} pixels per image")
    if plan.max_batch:
        parts.append(f"a batch of {plan.max_batch}")
    return " and ".join(parts)
