"""A V3 pack that looks for an optional ComfyUI module only when its extension is asked for nodes."""

from comfy_api.latest import ComfyExtension, io


class V3FamilyNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3FamilyNode", category="family_pack", inputs=[io.Int.Input("a", default=1)],
                         outputs=[io.Int.Output()])

    @classmethod
    def execute(cls, a):
        return io.NodeOutput(a)


class Extension(ComfyExtension):
    async def get_node_list(self):
        try:
            import comfy.context_windows  # noqa: F401
        except ImportError:
            pass
        return [V3FamilyNode]


async def comfy_entrypoint():
    return Extension()
