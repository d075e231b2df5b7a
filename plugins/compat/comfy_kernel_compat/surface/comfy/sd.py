"""ComfyUI's ``comfy.sd``: checkpoint loading through the core_nodes loader nodes."""

from __future__ import annotations

import os
from typing import Any


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, model_options: dict | None = None,
                                 te_model_options: dict | None = None) -> tuple[Any, Any, Any, Any]:
    """``(model, clip, vae, clipvision)`` for a checkpoint file in one of the ``checkpoints`` folders."""
    import folder_paths
    import nodes

    path = os.path.abspath(ckpt_path)
    for directory in folder_paths.get_folder_paths("checkpoints"):
        root = os.path.abspath(directory) + os.sep
        if path.startswith(root):
            model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(path[len(root):])
            return (model if output_model else None, clip if output_clip else None,
                    vae if output_vae else None, None)
    raise NotImplementedError("comfy-kernel loads checkpoints from its checkpoints folders only: "
                              f"{ckpt_path} is outside them")
