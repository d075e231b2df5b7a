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


def tiny_sd(base: Path, checkpoint: Path, batch: int) -> dict[str, Any]:
    """The tiny SD1.5 checkpoint loaded by the nodes in ``base``: model, clip, "a photo of a cat" / "blurry"
    conditioning and an empty 64x64 latent of ``batch`` images. Skips when the file cannot be hard-linked."""
    import pytest

    from comfy_kernel_core_nodes.nodes import conditioning, latent, loaders

    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True)
    try:
        (folder / checkpoint.name).hardlink_to(checkpoint)
    except OSError:
        pytest.skip("no hard link possible")
    use_base(base)
    model, clip, _ = loaders.CheckpointLoaderSimple().load_checkpoint(checkpoint.name)
    (pos,) = conditioning.CLIPTextEncode().encode(clip, "a photo of a cat")
    (neg,) = conditioning.CLIPTextEncode().encode(clip, "blurry")
    (empty,) = latent.EmptyLatentImage().generate(64, 64, batch)
    return {"model": model, "clip": clip, "pos": pos, "neg": neg, "empty": empty}
