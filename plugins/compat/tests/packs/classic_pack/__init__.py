"""A classic ComfyUI node pack, written the way pack authors write them."""

import os

import folder_paths

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

folder_paths.add_model_folder_path("classic_models", os.path.join(os.path.dirname(__file__), "models"))

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
