"""Runs before any pack is imported; ComfyUI's modules are already importable."""

import os

import folder_paths

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "prestartup_ran.txt"), "w") as f:
    f.write(folder_paths.get_output_directory())
