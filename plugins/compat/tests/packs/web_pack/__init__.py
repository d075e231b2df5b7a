"""A pack with a web directory, locales, example workflows and a prestartup script."""

import os

import nodes

WEB_DIRECTORY = "./web"

# Some packs register extra web directories by writing to EXTENSION_WEB_DIRS.
nodes.EXTENSION_WEB_DIRS["web_pack_extra"] = os.path.join(os.path.dirname(__file__), "web_alt")


class WebEcho:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "echo"
    CATEGORY = "web_pack"

    def echo(self, text):
        return (text,)


NODE_CLASS_MAPPINGS = {"WebEcho": WebEcho}
NODE_DISPLAY_NAME_MAPPINGS = {"WebEcho": "Web Echo"}
