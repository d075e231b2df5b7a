"""Helpers for tests that call node classes directly: a data directory the nodes' context points at."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any


def use_base(base: Path, **flags: Any) -> Any:
    """Point the core nodes at a fresh base directory (input/output/temp/models) with server ``flags``."""
    from comfy_kernel.files.folders import DataDirs, FolderRegistry
    from comfy_kernel_core_nodes.nodes import context

    dirs = DataDirs.from_base(str(base))
    for d in (dirs.input, dirs.output, dirs.temp):
        Path(d).mkdir(parents=True, exist_ok=True)
    folders = FolderRegistry(dirs)
    config = SimpleNamespace(disable_metadata=False, preview_method="none", preview_size=512)
    for key, value in flags.items():
        setattr(config, key, value)
    context.configure(folders=folders, config=config)
    return folders
