"""A V3 node pack: schema-declared nodes listed by comfy_entrypoint."""

from comfy_api.latest import ComfyAPISync, ComfyExtension, io, ui
from typing_extensions import override


class V3Repeat(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="V3Repeat",
            display_name="V3 Repeat",
            category="v3_pack",
            description="Repeat a string",
            inputs=[
                io.String.Input("text", default="hi"),
                io.Int.Input("times", default=2, min=1, max=10),
                io.Combo.Input("sep", options=["-", "+"]),
            ],
            outputs=[io.String.Output(display_name="repeated")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, text: str, times: int, sep: str) -> io.NodeOutput:
        api = ComfyAPISync()
        api.execution.set_progress(1, 2)
        value = sep.join([text] * times)
        return io.NodeOutput(value, ui=ui.PreviewText(f"{cls.hidden.unique_id}:{value}"))


class V3Length(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="V3Length",
            category="v3_pack",
            inputs=[io.String.Input("text", force_input=True)],
            outputs=[io.Int.Output()],
            is_output_node=True,
        )

    @classmethod
    async def execute(cls, text: str) -> io.NodeOutput:
        return io.NodeOutput(len(text), ui={"length": [len(text)]})


class V3Preview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="V3Preview", category="v3_pack", is_output_node=True,
                         inputs=[io.Int.Input("size", default=4)], outputs=[])

    @classmethod
    def execute(cls, size: int) -> io.NodeOutput:
        import torch

        image = torch.zeros(2, size, size, 3)
        image[..., 2] = 1.0
        saved = ui.ImageSaveHelper.save_images(image[:1], "v3/blue", "output", cls)
        return io.NodeOutput(ui={**ui.PreviewImage(image, cls=cls).as_dict(), "saved": saved})


class V3Extension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [V3Repeat, V3Length, V3Preview]


async def comfy_entrypoint() -> V3Extension:
    return V3Extension()
