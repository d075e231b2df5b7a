import os

import comfy.model_management
import comfy.utils
import folder_paths
import nodes
from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict
from nodes import MAX_RESOLUTION


class ClassicConcat(ComfyNodeABC):
    """Joins two strings; exercises widgets, defaults and a model combo."""

    @classmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        return {
            "required": {
                "text": (IO.STRING, {"default": "hello", "multiline": False}),
                "count": ("INT", {"default": 2, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "model": (folder_paths.get_filename_list("classic_models"),),
            },
            "optional": {"suffix": ("STRING", {"forceInput": True})},
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("STRING", "INT")
    RETURN_NAMES = ("joined", "length")
    FUNCTION = "run"
    CATEGORY = "classic_pack"
    DESCRIPTION = "Repeat and join"

    def run(self, text, count, model, suffix="", unique_id=None):
        path = folder_paths.get_full_path_or_raise("classic_models", model)
        assert os.path.isfile(path)
        comfy.model_management.throw_exception_if_processing_interrupted()
        joined = "-".join([text] * count) + suffix
        return (joined, len(joined))


class ClassicShow:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "classic_pack"

    def show(self, value):
        registry_sees_me = "ClassicShow" in nodes.NODE_CLASS_MAPPINGS
        out_dir = folder_paths.get_output_directory()
        full_output_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path("classic/show", out_dir)
        name = f"{filename}_{counter:05}_.txt"
        with open(os.path.join(full_output_folder, name), "w") as f:
            f.write(value)
        return {"ui": {"text": [value], "registered": [registry_sees_me],
                       "files": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


NODE_CLASS_MAPPINGS = {"ClassicConcat": ClassicConcat, "ClassicShow": ClassicShow}
NODE_DISPLAY_NAME_MAPPINGS = {"ClassicConcat": "Classic Concat"}
