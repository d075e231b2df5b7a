"""Where the ComfyUI-named modules find the running kernel.

The plugin's hooks capture the kernel as soon as one is handed over; before
that (a pip-installed pack importing ``folder_paths`` while plugins are still
being discovered) :func:`comfy_kernel.kernel.current_kernel` answers. Outside
a server (a pack imported by a script or a unit test) a standalone folder
registry on the current directory stands in, so importing still works.
"""

from __future__ import annotations

import os
from typing import Any

_kernel: Any = None
_standalone_folders: Any = None


def set_kernel(kernel: Any) -> None:
    global _kernel
    _kernel = kernel


def kernel() -> Any:
    """The running :class:`comfy_kernel.kernel.Kernel`, or None outside a server."""
    if _kernel is not None:
        return _kernel
    from comfy_kernel.kernel import current_kernel

    return current_kernel()


def folders() -> Any:
    """The kernel's :class:`~comfy_kernel.files.folders.FolderRegistry` (or a standalone one)."""
    k = kernel()
    if k is not None:
        return k.folders
    global _standalone_folders
    if _standalone_folders is None:
        from comfy_kernel.files.folders import DataDirs, FolderRegistry

        _standalone_folders = FolderRegistry(DataDirs.from_base(os.getcwd()))
    return _standalone_folders


def dirs() -> Any:
    """The data directories (``input``, ``output``, ``temp``, ``user``, ``models`` ...)."""
    return folders().dirs
