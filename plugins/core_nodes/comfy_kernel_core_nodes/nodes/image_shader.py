"""GLSL Shader (current ComfyUI's ``comfy_extras.nodes_glsl``): a user's fragment shader over images.

The rendering is :mod:`..media.glsl`'s, on the shared headless OpenGL ES
context of :mod:`..media.egl`; neither is imported before the node runs, so
the server starts without PyOpenGL or the system's GL libraries and a machine
without them gets a clear error from the node instead.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import MAX_RESOLUTION, NodeDef

# ComfyUI's slot counts; media/glsl.py (not imported before the node runs) has the image and curve ones too
MAX_IMAGES, MAX_UNIFORMS, MAX_BOOLS, MAX_CURVES = 5, 20, 10, 4

DEFAULT_FRAGMENT_SHADER = """#version 300 es
precision highp float;

uniform sampler2D u_image0;
uniform vec2 u_resolution;

in vec2 v_texCoord;
layout(location = 0) out vec4 fragColor0;

void main() {
    fragColor0 = texture(u_image0, v_texCoord);
}
"""


def _by_index(values: dict[str, Any] | None, prefix: str) -> dict[int, Any]:
    """``{"u_float2": v}`` -> ``{2: v}``: the slot a value was linked to names its uniform."""
    out = {}
    for name, value in (values or {}).items():
        if value is not None and name.startswith(prefix) and name[len(prefix):].isdigit():
            out[int(name[len(prefix):])] = value
    return out


class GLSLShader(io.ComfyNode):
    """Renders a GLSL ES 3.00 fragment shader over up to five images into up to four images."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        def grow(template: io.Input, prefix: str, least: int, most: int) -> io.Autogrow.TemplatePrefix:
            return io.Autogrow.TemplatePrefix(template, prefix=prefix, min=least, max=most)

        return io.Schema(
            node_id="GLSLShader", display_name="GLSL Shader", category="image/shader", is_experimental=True,
            description="Runs a GLSL ES 3.00 fragment shader over the input images, headless (OpenGL ES 3 "
                        "through EGL). u_resolution (vec2) holds the output size.",
            inputs=[
                io.String.Input("fragment_shader", default=DEFAULT_FRAGMENT_SHADER, multiline=True,
                                tooltip="The fragment shader's source, GLSL ES 3.00 (WebGL 2 dialect)."),
                io.DynamicCombo.Input("size_mode", options=[
                    io.DynamicCombo.Option("from_input", []),
                    io.DynamicCombo.Option("custom", [
                        io.Int.Input("width", default=512, min=1, max=MAX_RESOLUTION),
                        io.Int.Input("height", default=512, min=1, max=MAX_RESOLUTION),
                    ]),
                ], tooltip="The output size: that of the first image, or the width and height given."),
                io.Autogrow.Input("images", template=grow(io.Image.Input("image"), "image", 1, MAX_IMAGES),
                                  tooltip="Read in the shader as sampler2D u_image0, u_image1, ..."),
                io.Autogrow.Input("floats", template=grow(io.Float.Input("float", default=0.0), "u_float", 0,
                                                          MAX_UNIFORMS),
                                  tooltip="Read in the shader as float u_float0, u_float1, ..."),
                io.Autogrow.Input("ints", template=grow(io.Int.Input("int", default=0), "u_int", 0, MAX_UNIFORMS),
                                  tooltip="Read in the shader as int u_int0, u_int1, ..."),
                io.Autogrow.Input("bools", template=grow(io.Boolean.Input("bool", default=False), "u_bool", 0,
                                                         MAX_BOOLS),
                                  tooltip="Read in the shader as bool u_bool0, u_bool1, ..."),
                io.Autogrow.Input("curves", template=grow(io.Curve.Input("curve"), "u_curve", 0, MAX_CURVES),
                                  tooltip="Read in the shader as sampler2D u_curve0, ...: 256 x 1 look-up tables "
                                          "(texture(u_curve0, vec2(x, 0.5)).r)."),
            ],
            outputs=[io.Image.Output(display_name=f"IMAGE{i}", tooltip=f"What the shader writes to fragColor{i} "
                                                                        f"(layout(location = {i})), RGBA.")
                     for i in range(4)],
        )

    @classmethod
    def execute(cls, fragment_shader: str, size_mode: dict[str, Any], images: dict[str, Any],
                floats: dict[str, Any] | None = None, ints: dict[str, Any] | None = None,
                bools: dict[str, Any] | None = None, curves: dict[str, Any] | None = None,
                **kwargs: Any) -> io.NodeOutput:
        import torch

        from comfy_kernel.nodes.curves import CurveInput

        from ..media import glsl
        from . import context
        from .save import save_images

        tensors = _by_index(images, "image")
        if not tensors:
            raise ValueError("GLSL Shader needs at least one input image")
        first = tensors[min(tensors)]
        if size_mode.get("size_mode") == "custom":
            width, height = int(size_mode["width"]), int(size_mode["height"])
        else:
            height, width = int(first.shape[1]), int(first.shape[2])
        uniforms = glsl.Uniforms(
            floats=_by_index(floats, "u_float"), ints=_by_index(ints, "u_int"), bools=_by_index(bools, "u_bool"),
            curves={i: CurveInput.from_raw(c).to_lut(glsl.CURVE_SIZE) for i, c in _by_index(curves, "u_curve").items()})
        arrays = {i: t.detach().cpu().float().numpy() for i, t in tensors.items()}
        rendered = [torch.from_numpy(out) for out in glsl.render(fragment_shader, width, height, arrays, uniforms)]

        temp = context.temp_dir()
        shown_inputs = [item for i in sorted(tensors)
                        for item in save_images(tensors[i], "GLSLShader_input", temp, "temp", 1, None, None)]
        shown = save_images(rendered[0], "GLSLShader_output", temp, "temp", 1, None, None)
        return io.NodeOutput(*rendered, ui={"input_images": shown_inputs, "images": shown})


NODES = [NodeDef("GLSLShader", GLSLShader, "GLSL Shader", "comfy_extras.nodes_glsl")]
