"""Low-VRAM mode: run a model whose weights do not fit on the device.

The weights stay in CPU memory. Each submodule that owns parameters gets a
forward pre-hook that moves its own weights to the device just before it runs
and a forward hook that points them back at the CPU copies afterwards, so at
most one layer's weights (plus what torch has not freed yet) sit on the device
at a time. Moving back costs nothing: the CPU tensors are kept, and inference
never changes them.

Limitation: a module whose forward reads a *child's* weights directly (not by
calling the child) sees the CPU copy; such a parent must be streamed as a unit
(pass it in ``units``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _own_tensors(module: Any) -> list[tuple[str, Any, bool]]:
    tensors = [(name, p, True) for name, p in module.named_parameters(recurse=False) if p is not None]
    tensors += [(name, b, False) for name, b in module.named_buffers(recurse=False) if b is not None]
    return tensors


class WeightStreamer:
    """Hooks that stream ``model``'s weights to ``device`` layer by layer; :meth:`detach` removes them."""

    def __init__(self, model: Any, device: str, *, units: Iterable[Any] | None = None,
                 non_blocking: bool = True) -> None:
        self.model = model
        self.device = device
        self.non_blocking = non_blocking
        self.moves = 0
        self._handles: list[Any] = []
        self._units = list(units) if units is not None else None

    def attach(self) -> WeightStreamer:
        """Install the hooks (idempotent)."""
        if self._handles:
            return self
        units = self._units if self._units is not None else [
            m for m in self.model.modules() if _own_tensors(m)]
        for unit in units:
            self._handles.append(unit.register_forward_pre_hook(self._to_device))
            self._handles.append(unit.register_forward_hook(self._to_host, always_call=True))
        return self

    def detach(self) -> None:
        """Remove the hooks; the weights stay where they are (on the host between calls)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _to_device(self, module: Any, args: Any) -> None:
        saved: dict[str, Any] = {}
        tensors = list(module.named_parameters()) + list(module.named_buffers()) if self._units is not None \
            else [(n, t) for n, t, _ in _own_tensors(module)]
        for name, tensor in tensors:
            saved[name] = tensor.data
            tensor.data = tensor.data.to(self.device, non_blocking=self.non_blocking)
        module._comfy_streamed = saved
        self.moves += 1

    def _to_host(self, module: Any, args: Any, output: Any) -> None:
        saved = module.__dict__.pop("_comfy_streamed", None)
        if not saved:
            return
        lookup = dict(module.named_parameters()) | dict(module.named_buffers())
        for name, host in saved.items():
            lookup[name].data = host
