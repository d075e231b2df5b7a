"""``comfy_execution.validation``: the link type rule the executor applies."""

from __future__ import annotations

from comfy_kernel.nodes.types import wildcard_ne


def validate_node_input(received_type: str, input_type: str, strict: bool = False) -> bool:
    """Whether an output of ``received_type`` may feed an input of ``input_type`` (``*`` and subsets match)."""
    if strict:
        return received_type == input_type
    return not wildcard_ne(received_type, input_type)


__all__ = ["validate_node_input"]
