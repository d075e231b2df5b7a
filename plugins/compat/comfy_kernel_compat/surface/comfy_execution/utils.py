"""``comfy_execution.utils``: the execution context of the calling node."""

from comfy_kernel.progress import CurrentNodeContext, ExecutionContext, get_executing_context

__all__ = ["CurrentNodeContext", "ExecutionContext", "get_executing_context"]
