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
    """ComfyUI's executor class with the methods packs read or wrap.

    comfy-kernel runs prompts in its own executor: the class can be imported,
    its methods read and replaced (packs wrap ``execute`` or
    ``handle_execution_error`` at import), but it cannot be instantiated and
    wrapping it does not change how prompts run.
    """

    def __init__(self, server: Any = None, cache_type: Any = False, cache_args: Any = None) -> None:
        raise RuntimeError("comfy-kernel runs prompts itself; PromptExecutor cannot be used by node packs")

    def reset(self) -> None:
        """Executor state is per prompt on comfy-kernel."""

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        """Messages are sent by the kernel's executor."""

    def handle_execution_error(self, prompt_id: str, prompt: dict[str, Any], current_outputs: Any,
                               executed: Any, error: dict[str, Any], ex: BaseException) -> None:
        """Errors are reported by the kernel's executor (``execution_error``)."""

    def execute(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any] | None = None,
                execute_outputs: list[str] | None = None) -> None:
        raise RuntimeError("comfy-kernel runs prompts itself")

    async def execute_async(self, prompt: dict[str, Any], prompt_id: str, extra_data: dict[str, Any] | None = None,
                            execute_outputs: list[str] | None = None) -> None:
        raise RuntimeError("comfy-kernel runs prompts itself")


def full_type_name(klass: type) -> str:
    """``module.QualName`` of a class (builtins without the module), as ComfyUI reports exception types."""
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"


map_node_over_list = None
