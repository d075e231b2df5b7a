"""Low-VRAM mode: run a model whose weights do not fit on the device.

The weights stay in CPU memory. Each submodule that owns parameters gets a
forward pre-hook that moves its own weights to the device just before it runs
and a forward hook that puts the CPU tensors back afterwards, so at
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


def _has_own_tensors(module: Any) -> bool:
    return any(t is not None for t in module._parameters.values()) or \
        any(t is not None for t in module._buffers.values())


def _tensor_slots(module: Any, recurse: bool) -> list[tuple[dict[str, Any], str]]:
    """(a module's _parameters or _buffers dict, name) for each tensor of ``module``."""
    owners = module.modules() if recurse else [module]
    return [(table, name) for owner in owners for table in (owner._parameters, owner._buffers)
            for name, tensor in table.items() if tensor is not None]


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
            m for m in self.model.modules() if _has_own_tensors(m)]
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
        import torch

        saved = []
        for table, name in _tensor_slots(module, recurse=self._units is not None):
            host = table[name]
            moved = host.detach().to(self.device, non_blocking=self.non_blocking)
            if isinstance(host, torch.nn.Parameter):
                moved = torch.nn.Parameter(moved, requires_grad=host.requires_grad)
            table[name] = moved
            saved.append((table, name, host))
        module.__dict__["_comfy_streamed"] = saved
        self.moves += 1

    def _to_host(self, module: Any, args: Any, output: Any) -> None:
        for table, name, host in module.__dict__.pop("_comfy_streamed", ()):
            table[name] = host
