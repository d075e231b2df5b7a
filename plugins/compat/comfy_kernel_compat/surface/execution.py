"""ComfyUI's ``execution`` module, read-only.

Some packs import names from here to inspect or wrap the executor. The
names exist and the ones with a meaning on comfy-kernel work
(``validate_node_input``, ``get_input_info``, ``ExecutionBlocker``,
``DynamicPrompt``); patching them changes nothing, because comfy-kernel's
executor does not call through this module.
"""

from __future__ import annotations

import enum
from typing import Any

from comfy_execution.graph import DynamicPrompt, ExecutionBlocker, get_input_info  # noqa: F401
from comfy_execution.validation import validate_node_input  # noqa: F401

from comfy_kernel_compat import state


class ExecutionResult(enum.Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


class CacheType(enum.Enum):
    CLASSIC = 0
    LRU = 1
    NONE = 2
    RAM_PRESSURE = 3


class PromptQueue:
    """Read-only queue views (the server's prompt_queue)."""

    def get_tasks_remaining(self) -> int:
        kernel = state.kernel()
        return kernel.queue_remaining() if kernel is not None else 0


class PromptExecutor:
    """Placeholder for packs that reference the class; comfy-kernel's engine is not patchable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("comfy-kernel runs prompts itself; PromptExecutor cannot be used by node packs")


map_node_over_list = None
