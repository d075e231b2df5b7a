"""Flow control the way packs do it: lazy inputs, ExecutionBlocker and GraphBuilder expansion."""

from comfy_execution.graph import ExecutionBlocker
from comfy_execution.graph_utils import GraphBuilder, is_link


class FlowSwitch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choose_a": ("BOOLEAN", {"default": True}),
                             "a": ("STRING", {"lazy": True, "forceInput": True}),
                             "b": ("STRING", {"lazy": True, "forceInput": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "switch"
    CATEGORY = "flow_pack"

    def check_lazy_status(self, choose_a, a=None, b=None):
        wanted = "a" if choose_a else "b"
        return [wanted] if (a if choose_a else b) is None else []

    def switch(self, choose_a, a=None, b=None):
        return (a if choose_a else b,)


class FlowText:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "make"
    CATEGORY = "flow_pack"

    def make(self, text):
        return (text,)


class FlowGate:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"forceInput": True}), "open": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "gate"
    CATEGORY = "flow_pack"

    def gate(self, value, open):
        return (value if open else ExecutionBlocker(None),)


class FlowAppend:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"forceInput": True}), "char": ("STRING", {"default": "x"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "append"
    CATEGORY = "flow_pack"

    def append(self, value, char):
        return (value + char,)


class FlowRepeat:
    """Expands into a chain of FlowAppend nodes built with GraphBuilder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"forceInput": True}), "times": ("INT", {"default": 3, "min": 1})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "expand"
    CATEGORY = "flow_pack"

    def expand(self, value, times):
        graph = GraphBuilder()
        current = value
        for i in range(times):
            node = graph.node("FlowAppend", value=current, char=str(i))
            current = node.out(0)
        assert is_link(current)
        return {"result": (current,), "expand": graph.finalize()}


class FlowShow:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "flow_pack"

    def show(self, value):
        return {"ui": {"text": [value]}}


class FlowInspect:
    """Reads its own node through the DYNPROMPT hidden input."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": {"dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "inspect"
    OUTPUT_NODE = True
    CATEGORY = "flow_pack"

    def inspect(self, dynprompt, unique_id):
        from comfy_execution.graph import DynamicPrompt

        node = dynprompt.get_node(unique_id)
        return {"ui": {"class_type": [node["class_type"]], "is_dynprompt": [isinstance(dynprompt, DynamicPrompt)],
                       "parent": [dynprompt.get_parent_node_id(unique_id)]}}


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (FlowSwitch, FlowText, FlowGate, FlowAppend, FlowRepeat,
                                                     FlowShow, FlowInspect)}
