"""``comfy_api.latest``: ``io``, ``ui``, ``ComfyExtension`` and the progress API for V3 nodes.

``io`` is the kernel's V3 node module itself, so node classes built on it
are exactly what the executor runs; a pack's ``comfy_entrypoint`` is called
by the kernel's pack loader (spec §3.8).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import comfy_api.input as _input
import comfy_api.input_impl as _input_impl
import comfy_api.util as _util
from comfy_kernel import progress as _progress
from comfy_kernel.nodes import io
from comfy_kernel.nodes.io import ComfyExtension

from . import ui


class _Execution:
    """``ComfyAPI().execution``."""

    async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                           preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        """Report progress of the running node: ``progress_state`` only, not the legacy ``progress``."""
        _progress.set_progress(value, max_value, node_id, preview_image)


class ComfyAPI:
    """The async API object V3 nodes use (``ComfyAPI().execution.set_progress(...)``)."""

    def __init__(self) -> None:
        self.execution = _Execution()


def _run_sync(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion on a helper thread carrying the caller's context."""
    context = contextvars.copy_context()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = context.run(asyncio.run, coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name="ComfyAPISync")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


class _ExecutionSync:
    def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                     preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        _run_sync(_Execution().set_progress(value, max_value, node_id, preview_image, ignore_size_limit))


class ComfyAPISync:
    """The same API with blocking methods, for synchronous ``execute``."""

    def __init__(self) -> None:
        self.execution = _ExecutionSync()


class Input:
    """Input value types (``Input.Image`` ...): tensors and plain objects, and the VIDEO type."""

    Image = Any
    Audio = Any
    Mask = Any
    Latent = Any
    Video = _input.VideoInput


class Types:
    """Structured value types: the video container, codec and components."""

    VideoContainer = _util.VideoContainer
    VideoCodec = _util.VideoCodec
    VideoComponents = _util.VideoComponents


class InputImpl:
    """Concrete video values (``VideoFromFile``, and ``VideoFromComponents`` with core_nodes)."""

    VideoFromFile = _input_impl.VideoFromFile
    if hasattr(_input_impl, "VideoFromComponents"):
        VideoFromComponents = _input_impl.VideoFromComponents


ComfyAPI_latest = ComfyAPI

__all__ = ["io", "ui", "ComfyExtension", "ComfyAPI", "ComfyAPISync", "Input", "Types", "InputImpl"]
