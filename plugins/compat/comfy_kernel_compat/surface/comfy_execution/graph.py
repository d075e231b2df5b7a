"""``comfy_execution.graph``: DynamicPrompt, ExecutionBlocker and the graph errors."""

from comfy_kernel.execution.graph import (
    DependencyCycleError,
    DynamicPrompt,
    ExecutionList,
    NodeInputError,
    NodeNotFoundError,
)
from comfy_kernel.nodes.graph_utils import ExecutionBlocker


def get_input_info(class_def: type, input_name: str, valid_inputs: dict | None = None) -> tuple:
    """``(type, section, options)`` of an input of a node class, or ``(None, None, None)``."""
    valid_inputs = valid_inputs or class_def.INPUT_TYPES()
    for section in ("required", "optional", "hidden"):
        spec = valid_inputs.get(section, {}).get(input_name)
        if spec is not None:
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else None
            kind = spec[0]
            return ("COMBO" if isinstance(kind, list) else kind), section, options
    return None, None, None


__all__ = ["DynamicPrompt", "ExecutionBlocker", "ExecutionList", "NodeNotFoundError", "NodeInputError",
           "DependencyCycleError", "get_input_info"]
