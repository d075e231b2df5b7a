"""Logic and value utilities newer than ComfyUI 0.3.64 that the frontend's templates use.

Switches, boolean logic, a custom combo, a math expression, number
conversion, a seed widget and list building, with current ComfyUI's
contracts (``comfy_extras.nodes_logic``, ``nodes_math``,
``nodes_number_convert``, ``nodes_seed``, ``nodes_toolkit``).
"""

from __future__ import annotations

import math
import string
import sys
from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

MISSING = object()  # an optional input that is not connected at all (None means "not evaluated yet")


class ComfySwitchNode(io.ComfyNode):
    """Passes ``on_true`` or ``on_false``; only the chosen branch is evaluated (lazy inputs)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        t = io.MatchType.Template("switch")
        return io.Schema(node_id="ComfySwitchNode", display_name="If/Else Switch", category="utilities/logic",
                         search_aliases=["if", "then", "switch", "conditional", "branch"], is_experimental=True,
                         inputs=[io.Boolean.Input("switch"),
                                 io.MatchType.Input("on_false", template=t, lazy=True, optional=True),
                                 io.MatchType.Input("on_true", template=t, lazy=True, optional=True)],
                         outputs=[io.MatchType.Output(template=t, display_name="output")])

    @classmethod
    def check_lazy_status(cls, switch: bool, on_false: Any = MISSING, on_true: Any = MISSING) -> list[str]:
        if switch and on_true is None:
            return ["on_true"]
        if not switch and on_false is None:
            return ["on_false"]
        return []

    @classmethod
    def execute(cls, switch: bool, on_true: Any = MISSING, on_false: Any = MISSING) -> io.NodeOutput:
        chosen = on_true if switch else on_false
        return io.NodeOutput(None if chosen is MISSING else chosen)


class CustomCombo(io.ComfyNode):
    """A combo whose options the user types in the frontend; the server takes the choice as given."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="CustomCombo", display_name="Custom Combo", category="utilities",
                         is_experimental=True, accept_all_inputs=True,
                         inputs=[io.Combo.Input("choice", options=[])],
                         outputs=[io.String.Output(display_name="STRING"), io.Int.Output(display_name="INDEX")])

    @classmethod
    def validate_inputs(cls, choice: str, index: int = 0, **kwargs: Any) -> bool:
        return True  # the options live in the workflow, not in the schema

    @classmethod
    def execute(cls, choice: str, index: int = 0, **kwargs: Any) -> io.NodeOutput:
        return io.NodeOutput(choice, index)


class ComfyNotNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ComfyNotNode", display_name="Not", category="utilities/logic",
                         description="True when the value is falsy (Python truthiness).",
                         search_aliases=["invert", "toggle", "negate", "flip boolean"],
                         inputs=[io.AnyType.Input("value")], outputs=[io.Boolean.Output()])

    @classmethod
    def execute(cls, value: Any) -> io.NodeOutput:
        return io.NodeOutput(not value)


def _values_template() -> Any:
    return io.Autogrow.TemplatePrefix(input=io.AnyType.Input("value"), prefix="value", min=1)


class ComfyAndNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ComfyAndNode", display_name="And", category="utilities/logic",
                         description="True when every value is truthy (Python truthiness).",
                         search_aliases=["all", "every"],
                         inputs=[io.Autogrow.Input("values", template=_values_template())],
                         outputs=[io.Boolean.Output()])

    @classmethod
    def execute(cls, values: dict[str, Any]) -> io.NodeOutput:
        return io.NodeOutput(all(values.values()))


class ComfyOrNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ComfyOrNode", display_name="Or", category="utilities/logic",
                         description="True when any value is truthy (Python truthiness).",
                         search_aliases=["any", "some"],
                         inputs=[io.Autogrow.Input("values", template=_values_template())],
                         outputs=[io.Boolean.Output()])

    @classmethod
    def execute(cls, values: dict[str, Any]) -> io.NodeOutput:
        return io.NodeOutput(any(values.values()))


class ComfyPassOrNoneNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        t = io.MatchType.Template("value")
        return io.Schema(
            node_id="ComfyPassOrNoneNode", display_name="Pass or None", category="utilities/logic",
            description="Passes the input on; without one, the default; without either, None.",
            search_aliases=["fallback", "null", "nothing", "empty", "blank"],
            inputs=[io.MatchType.Input("anything", template=t, optional=True, tooltip="The value to pass on."),
                    io.MatchType.Input("default", template=t, optional=True,
                                       tooltip="Used when the first input is missing or None.")],
            outputs=[io.MatchType.Output(template=t, id="output"), io.Boolean.Output("is_none")])

    @classmethod
    def execute(cls, anything: Any = None, default: Any = None) -> io.NodeOutput:
        if anything is None:
            return io.NodeOutput(default, default is None)
        return io.NodeOutput(anything, False)


class ComfyMathExpression(io.ComfyNode):
    """Evaluates an arithmetic expression over inputs ``a`` .. ``z`` with our own safe evaluator."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        names = io.Autogrow.TemplateNames(input=io.MultiType.Input("value", [io.Float, io.Int, io.Boolean]),
                                          names=list(string.ascii_lowercase), min=0)
        return io.Schema(node_id="ComfyMathExpression", display_name="Math Expression", category="utilities",
                         search_aliases=["math", "expression", "formula", "calculate", "calculator", "eval"],
                         inputs=[io.String.Input("expression", default="a", multiline=True),
                                 io.Autogrow.Input("values", template=names)],
                         outputs=[io.Float.Output(display_name="FLOAT"), io.Int.Output(display_name="INT"),
                                  io.Boolean.Output(display_name="BOOL")])

    @classmethod
    def execute(cls, expression: str, values: dict[str, Any]) -> io.NodeOutput:
        from ..expression import evaluate

        if not expression.strip():
            raise ValueError("Expression cannot be empty.")
        names = dict(values)
        names["values"] = list(values.values())
        result = evaluate(expression, names)
        if not isinstance(result, (int, float)):
            raise ValueError(f"Math Expression '{expression}' must evaluate to a numeric result, "
                             f"got {type(result).__name__}: {result!r}")
        try:
            as_float = float(result)
        except OverflowError:
            raise ValueError(f"Math Expression '{expression}' produced a result too large to represent "
                             f"as a float: {result}") from None
        if not math.isfinite(as_float):
            raise ValueError(f"Math Expression '{expression}' produced a non-finite result: {result}")
        return io.NodeOutput(as_float, int(result), bool(result))


def convert_number(value: Any) -> tuple[float, int]:
    """(FLOAT, INT) of a bool, int, float or numeric string, as ComfyNumberConvert gives them."""
    if isinstance(value, bool):
        as_float, as_int = float(value), int(value)
    elif isinstance(value, int):
        as_float, as_int = float(value), value
    elif isinstance(value, float):
        as_float = value
        if not math.isfinite(as_float):
            raise ValueError(f"Cannot convert non-finite value to number: {as_float}")
        as_int = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("Cannot convert empty string to number.")
        try:
            as_float = float(text)
        except ValueError:
            raise ValueError(f"Cannot convert string to number: {value!r}") from None
        if not math.isfinite(as_float):
            raise ValueError(f"Cannot convert non-finite value to number: {as_float}")
        try:
            as_int = int(text)
        except ValueError:
            as_int = int(as_float)
    else:
        raise TypeError(f"Unsupported input type: {type(value).__name__}")
    return as_float, as_int


class ComfyNumberConvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="ComfyNumberConvert", display_name="Number Convert", category="math",
                         search_aliases=["int to float", "float to int", "number convert", "int2float",
                                         "float2int", "cast", "parse number", "string to number", "bool to int"],
                         inputs=[io.MultiType.Input("value", [io.Int, io.Float, io.String, io.Boolean],
                                                    display_name="value")],
                         outputs=[io.Float.Output(display_name="FLOAT"), io.Int.Output(display_name="INT")])

    @classmethod
    def execute(cls, value: Any) -> io.NodeOutput:
        return io.NodeOutput(*convert_number(value))


class SeedNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="SeedNode", display_name="Seed", category="utilities",
                         search_aliases=["seed", "random"],
                         inputs=[io.Int.Input("seed", min=0, max=sys.maxsize, control_after_generate="fixed",
                                              component="SetRandomInt")],
                         outputs=[io.Int.Output(display_name="seed")])

    @classmethod
    def execute(cls, seed: int) -> io.NodeOutput:
        return io.NodeOutput(seed)


class CreateList(io.ComfyNode):
    """Joins the items of every linked input (lists or single values) into one list output."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.Autogrow.TemplatePrefix(input=io.AnyType.Input("input"), prefix="input")
        return io.Schema(node_id="CreateList", display_name="Create List", category="utilities",
                         is_input_list=True, search_aliases=["Image Iterator", "Text Iterator", "Iterator"],
                         inputs=[io.Autogrow.Input("inputs", template=template)],
                         outputs=[io.AnyType.Output(is_output_list=True, display_name="list")])

    @classmethod
    def execute(cls, inputs: dict[str, list[Any]]) -> io.NodeOutput:
        items: list[Any] = []
        for value in inputs.values():
            items += value
        return io.NodeOutput(items)


class GetItemFromList(io.ComfyNode):
    """One item of a list output by index (negative counts from the end).

    A single linked value that is itself a Python list (a node that returns a
    list object rather than a list output) is indexed as that list.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="GetItemFromList", display_name="Get Item From List", category="utilities",
                         is_input_list=True, inputs=[io.AnyType.Input("list"), io.Int.Input("index", default=0)],
                         outputs=[io.AnyType.Output()], hidden=[io.Hidden.dynprompt, io.Hidden.unique_id])

    @classmethod
    def execute(cls, list: list[Any], index: list[int]) -> io.NodeOutput:  # noqa: A002 (ComfyUI's input name)
        items = list
        if len(items) == 1 and isinstance(items[0], (tuple, type([]))):
            items = items[0]
        return io.NodeOutput(items[index[0]])


NODES = [
    NodeDef("ComfySwitchNode", ComfySwitchNode, "If/Else Switch", "comfy_extras.nodes_logic"),
    NodeDef("CustomCombo", CustomCombo, "Custom Combo", "comfy_extras.nodes_logic"),
    NodeDef("ComfyNotNode", ComfyNotNode, "Not", "comfy_extras.nodes_logic"),
    NodeDef("ComfyAndNode", ComfyAndNode, "And", "comfy_extras.nodes_logic"),
    NodeDef("ComfyOrNode", ComfyOrNode, "Or", "comfy_extras.nodes_logic"),
    NodeDef("ComfyPassOrNoneNode", ComfyPassOrNoneNode, "Pass or None", "comfy_extras.nodes_logic"),
    NodeDef("ComfyMathExpression", ComfyMathExpression, "Math Expression", "comfy_extras.nodes_math"),
    NodeDef("ComfyNumberConvert", ComfyNumberConvert, "Number Convert", "comfy_extras.nodes_number_convert"),
    NodeDef("SeedNode", SeedNode, "Seed", "comfy_extras.nodes_seed"),
    NodeDef("CreateList", CreateList, "Create List", "comfy_extras.nodes_toolkit"),
    NodeDef("GetItemFromList", GetItemFromList, "Get Item From List", "comfy_extras.nodes_toolkit"),
]
