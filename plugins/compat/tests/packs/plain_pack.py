"""A single-file pack that imports nothing from ComfyUI (loads without the compat plugin)."""


class PlainUpper:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "abc"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "plain"

    def run(self, text):
        return (text.upper(),)


NODE_CLASS_MAPPINGS = {"PlainUpper": PlainUpper}
