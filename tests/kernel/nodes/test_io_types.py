"""V3 io pieces ComfyUI's newer core nodes rely on: MultiType, DICT/ARRAY, outputs named by id,
and ``accept_all_inputs`` reaching the executor."""

from __future__ import annotations

from comfy_kernel.execution.nodeclass import NodeDef
from comfy_kernel.nodes import io


class Node(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Node", accept_all_inputs=True,
                         inputs=[io.MultiType.Input("value", [io.Int, io.Float, io.Int], display_name="v"),
                                 io.Dict.Input("d"), io.Array.Input("a", optional=True)],
                         outputs=[io.Boolean.Output("is_none"), io.Int.Output(), io.Float.Output(display_name="F")])

    @classmethod
    def execute(cls, **kw):
        return io.NodeOutput(True, 1, 2.0)


def test_multitype_joins_its_types_and_keeps_options():
    info = Node.GET_NODE_INFO_V1()
    assert info["input"]["required"]["value"] == ["INT,FLOAT", {"display_name": "v"}]
    assert info["input"]["required"]["d"][0] == "DICT" and info["input"]["optional"]["a"][0] == "ARRAY"


def test_an_output_named_only_by_id_shows_the_id():
    assert Node.GET_NODE_INFO_V1()["output_name"] == ["is_none", "INT", "F"]
    assert Node.RETURN_NAMES == ("is_none", "INT", "F")


def test_accept_all_inputs_is_known_to_the_executor():
    assert NodeDef("Node", Node).accept_all
    assert not NodeDef("Other", type("Other", (Node,), {"define_schema": classmethod(
        lambda cls: io.Schema(node_id="Other"))})).accept_all


def test_io_names_of_newer_comfyui_releases_exist():
    """Node packs written against ComfyUI's current ``io`` name these types; each must carry ComfyUI's type name."""
    for name, io_type in {"ModelPatch": "MODEL_PATCH", "Tracks": "TRACKS", "WanCameraEmbedding": "WAN_CAMERA_EMBEDDING",
                          "LatentUpscaleModel": "LATENT_UPSCALE_MODEL", "Load3DAnimation": "LOAD_3D_ANIMATION",
                          "Histogram": "HISTOGRAM", "File3DAny": "FILE_3D", "File3DGLB": "FILE_3D_GLB",
                          "File3DUSDZ": "FILE_3D_USDZ"}.items():
        kind = getattr(io, name)
        assert kind.io_type == io_type
        assert kind.Input("x", optional=True).get_io_type() == io_type and kind.Output().get_io_type() == io_type


class Widgets(io.ComfyNode):
    """Widget types of ComfyUI's current ``io`` (0.18), declared as its own core nodes declare them."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="Widgets", inputs=[
            io.Color.Input("bg_color", default="#000000"), io.Color.Input("color"),
            io.ImageCompare.Input("compare"),
            io.BoundingBox.Input("bboxes", force_input=True), io.BoundingBox.Input("region", component="ImageCrop"),
        ], outputs=[io.Color.Output(), io.BoundingBox.Output()])

    @classmethod
    def execute(cls, **kw):
        return io.NodeOutput("#000000", {"x": 0, "y": 0, "width": 1, "height": 1})


def test_widget_types_of_newer_comfyui_releases():
    """Their type names, defaults and options as ComfyUI's ``io`` gives them (socketless widgets, its default box)."""
    required = Widgets.GET_NODE_INFO_V1()["input"]["required"]
    box = {"x": 0, "y": 0, "width": 512, "height": 512}
    assert required["bg_color"] == ["COLOR", {"default": "#000000", "socketless": True}]
    assert required["color"] == ["COLOR", {"default": "#ffffff", "socketless": True}]
    assert required["compare"] == ["IMAGECOMPARE", {"socketless": True}]
    assert required["bboxes"] == ["BOUNDING_BOX", {"default": box, "socketless": True, "forceInput": True}]
    assert required["region"] == ["BOUNDING_BOX", {"default": box, "socketless": True, "component": "ImageCrop"}]
    assert Widgets.GET_NODE_INFO_V1()["output"] == ["COLOR", "BOUNDING_BOX"]
