"""Primitive value nodes (utils/primitive): a widget whose value is the node's only output.

The frontend uses them to share one value between several nodes' inputs.
"""

from __future__ import annotations

import sys

from comfy_kernel.nodes import io

from .common import NodeDef

MODULE = "comfy_extras.nodes_primitive"


class PrimitiveString(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PrimitiveString", display_name="String", category="utils/primitive",
                         inputs=[io.String.Input("value")], outputs=[io.String.Output()])

    @classmethod
    def execute(cls, value: str) -> io.NodeOutput:
        return io.NodeOutput(value)


class PrimitiveStringMultiline(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PrimitiveStringMultiline", display_name="String (Multiline)",
                         category="utils/primitive", inputs=[io.String.Input("value", multiline=True)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, value: str) -> io.NodeOutput:
        return io.NodeOutput(value)


class PrimitiveInt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PrimitiveInt", display_name="Int", category="utils/primitive",
                         inputs=[io.Int.Input("value", min=-sys.maxsize, max=sys.maxsize,
                                              control_after_generate=True)],
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, value: int) -> io.NodeOutput:
        return io.NodeOutput(value)


class PrimitiveFloat(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PrimitiveFloat", display_name="Float", category="utils/primitive",
                         inputs=[io.Float.Input("value", min=-sys.maxsize, max=sys.maxsize)],
                         outputs=[io.Float.Output()])

    @classmethod
    def execute(cls, value: float) -> io.NodeOutput:
        return io.NodeOutput(value)


class PrimitiveBoolean(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="PrimitiveBoolean", display_name="Boolean", category="utils/primitive",
                         inputs=[io.Boolean.Input("value")], outputs=[io.Boolean.Output()])

    @classmethod
    def execute(cls, value: bool) -> io.NodeOutput:
        return io.NodeOutput(value)


NODES = [
    NodeDef("PrimitiveString", PrimitiveString, "String", MODULE),
    NodeDef("PrimitiveStringMultiline", PrimitiveStringMultiline, "String (Multiline)", MODULE),
    NodeDef("PrimitiveInt", PrimitiveInt, "Int", MODULE),
    NodeDef("PrimitiveFloat", PrimitiveFloat, "Float", MODULE),
    NodeDef("PrimitiveBoolean", PrimitiveBoolean, "Boolean", MODULE),
]
