"""LoadMoGeModel, MoGeInference and MoGeRender (ComfyUI's comfy_extras.nodes_moge).

MOGE_GEOMETRY is a dict: ``image`` [B, H, W, 3] always; ``points`` [B, H, W, 3],
``depth`` [B, H, W], ``intrinsics`` [B, 3, 3], ``mask`` [B, H, W] (bool) and
``normal`` [B, H, W, 3] when the model gives them; OpenCV camera axes (x
right, y down, z into the scene), masked-out pixels ``inf`` when asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfy_kernel.nodes import io

from ...nodes import context
from ...nodes.common import NodeDef

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

MODULE = "comfy_extras.nodes_moge"
CATEGORY = "image/geometry_estimation"
RENDERINGS = ["depth", "depth_colored", "normal_opengl", "normal_directx", "mask"]

MoGeModel = io.Custom("MOGE_MODEL")
MoGeGeometry = io.Custom("MOGE_GEOMETRY")


class LoadMoGeModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LoadMoGeModel", display_name="Load MoGe Model", category="loaders",
                         inputs=[io.Combo.Input("model_name", options=context.list_files("geometry_estimation"))],
                         outputs=[MoGeModel.Output()])

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        from .estimator import load_moge

        return io.NodeOutput(load_moge(context.full_path("geometry_estimation", model_name)))


class MoGeInference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MoGeInference", display_name="MoGe Inference", category=CATEGORY,
            inputs=[
                MoGeModel.Input("moge_model"), io.Image.Input("image"),
                io.Int.Input("resolution_level", default=9, min=0, max=9, tooltip="0 is fastest, 9 most detailed."),
                io.Float.Input("fov_x_degrees", default=0.0, min=0.0, max=170.0, step=0.1, advanced=True,
                               tooltip="The source camera's horizontal field of view; 0 recovers it from the "
                                       "predicted points."),
                io.Int.Input("batch_size", default=4, min=1, max=64, tooltip="Images per forward pass."),
                io.Boolean.Input("force_projection", default=True, advanced=True,
                                 tooltip="Rebuild the points from the depth through the recovered camera."),
                io.Boolean.Input("apply_mask", default=True, advanced=True,
                                 tooltip="Set masked-out pixels (sky, invalid) to inf in points and depth; the mask "
                                         "is returned either way."),
            ],
            outputs=[MoGeGeometry.Output(display_name="moge_geometry")])

    @classmethod
    def execute(cls, moge_model: Any, image: torch.Tensor, resolution_level: int, fov_x_degrees: float,
                batch_size: int, force_projection: bool, apply_mask: bool) -> io.NodeOutput:
        import torch

        from comfy_kernel.progress import ProgressBar, throw_exception_if_processing_interrupted

        image = image[..., :3]
        pixels = image.movedim(-1, 1).contiguous()
        fov = float(fov_x_degrees) if fov_x_degrees > 0 else None
        bar = ProgressBar(pixels.shape[0])
        parts: list[dict[str, torch.Tensor]] = []
        for start in range(0, pixels.shape[0], batch_size):
            throw_exception_if_processing_interrupted()
            parts.append(moge_model.infer(pixels[start:start + batch_size], resolution_level=resolution_level,
                                          fov_x=fov, force_projection=force_projection, apply_mask=apply_mask))
            bar.update_absolute(min(start + batch_size, pixels.shape[0]))
        geometry: dict[str, torch.Tensor] = {"image": image.cpu()}
        for key in parts[0]:
            geometry[key] = torch.cat([p[key] for p in parts])
        return io.NodeOutput(geometry)


class MoGeRender(io.ComfyNode):
    """Depth as normalised disparity (grey or turbo-coloured), normal maps, or the mask, as images."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MoGeRender", display_name="MoGe Render", category=CATEGORY,
            inputs=[MoGeGeometry.Input("moge_geometry"),
                    io.Combo.Input("output", options=RENDERINGS, default="depth",
                                   tooltip="Normal maps: OpenGL has green = +Y up (Blender, Unity, glTF), DirectX "
                                           "green = -Y down (Unreal).")],
            outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, moge_geometry: dict, output: str) -> io.NodeOutput:
        from .render import render

        return io.NodeOutput(render(moge_geometry, output))


NODES = [
    NodeDef("LoadMoGeModel", LoadMoGeModel, "Load MoGe Model", MODULE),
    NodeDef("MoGeInference", MoGeInference, "MoGe Inference", MODULE),
    NodeDef("MoGeRender", MoGeRender, "MoGe Render", MODULE),
]
