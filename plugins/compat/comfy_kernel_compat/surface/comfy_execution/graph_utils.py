"""``comfy_execution.graph_utils``: the kernel's GraphBuilder, is_link and ExecutionBlocker.

The executor recognises these exact classes, so they are re-exported, not copied.
"""

from comfy_kernel.nodes.graph_utils import ExecutionBlocker, GraphBuilder, Node, add_graph_prefix, is_link

__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "add_graph_prefix", "is_link"]
