"""Rendering a user's GLSL ES 3.00 fragment shader over images, as the GLSL Shader node does.

The shader runs once per output pixel over a triangle covering the output,
reading its inputs by the names ComfyUI gives them:

- ``in vec2 v_texCoord``: the pixel's position, (0, 0) at the image's
  bottom-left corner and (1, 1) at its top-right, as GL counts (images are
  uploaded bottom row first and read back the same way, so nothing is flipped);
- ``sampler2D u_image0`` .. ``u_image4``: the input images (RGBA, float, linear
  filtering, edges clamped; RGB images get alpha 1);
- ``sampler2D u_curve0`` .. ``u_curve3``: curves as 256 x 1 single-channel
  look-up tables;
- ``float u_float<i>``, ``int u_int<i>``, ``bool u_bool<i>``: the numbers;
- ``vec2 u_resolution``: the output size in pixels; ``int u_pass``: the pass.

It writes ``fragColor0`` .. ``fragColor3`` (``layout(location = i)``) or a
single ``out vec4``. ``#pragma passes N`` runs it N times: each pass but the
last draws into a scratch texture that the next pass reads as ``u_image0``.

Every precision is ``highp`` here: ``mediump`` and ``lowp`` are read as
``highp``, which is also the default for floats, ints and samplers. GLSL ES
lets a driver compute those at 16 bits; desktop GPUs, where such shaders are
written, do not, but Mesa's software rasterizer does, so without this a shader
would give other results on a machine without a GPU (half-float texels, ints
that wrap past 32767, such as the 0xRRGGBB colours of ColorToRGBInt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import egl

MAX_IMAGES = 5
MAX_CURVES = 4
MAX_OUTPUTS = 4
CURVE_SIZE = 256
_SPARE_UNIT = MAX_IMAGES + MAX_CURVES  # where textures that no sampler reads are bound while being set up

VERTEX_SHADER = """#version 300 es
out vec2 v_texCoord;
void main() {
    vec2 corner = vec2(gl_VertexID == 1 ? 2.0 : 0.0, gl_VertexID == 2 ? 2.0 : 0.0);
    v_texCoord = corner;
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

_VERSION = re.compile(r"^[ \t]*#[ \t]*version\b.*$", re.MULTILINE)
_LOW_PRECISION = re.compile(r"\b(?:mediump|lowp)\b")
_HIGHP_DEFAULTS = "precision highp float; precision highp int; precision highp sampler2D;"
_OUTPUT = re.compile(r"fragColor(\d+)")
_PASSES = re.compile(r"#pragma\s+passes\s+(\d+)")


class ShaderError(RuntimeError):
    """The user's shader does not compile or link, or declares a uniform the node cannot set."""


@dataclass
class Uniforms:
    """Values for ``u_float<i>``, ``u_int<i>``, ``u_bool<i>`` and the ``u_curve<i>`` tables, by index."""

    floats: dict[int, float] = field(default_factory=dict)
    ints: dict[int, int] = field(default_factory=dict)
    bools: dict[int, bool] = field(default_factory=dict)
    curves: dict[int, np.ndarray] = field(default_factory=dict)


def output_count(source: str) -> int:
    """How many outputs the shader writes: one past the highest ``fragColor<i>`` it names, at least one."""
    found = [int(i) for i in _OUTPUT.findall(source)]
    return min(max(found) + 1, MAX_OUTPUTS) if found else 1


def pass_count(source: str) -> int:
    found = _PASSES.search(source)
    return max(1, int(found.group(1))) if found else 1


def in_highp(source: str) -> str:
    """``source`` computed at ``highp`` throughout; the compiler's line numbers stay those of ``source``."""
    source = _LOW_PRECISION.sub(lambda m: "highp".ljust(len(m.group())), source)
    version = _VERSION.search(source)
    if version is None:
        return source
    next_line = source.count("\n", 0, version.end()) + 2
    return f"{source[:version.end()]}\n{_HIGHP_DEFAULTS}\n#line {next_line}{source[version.end():]}"


class _Objects:
    """GL objects made for one render, deleted together when it ends."""

    def __init__(self, gl: Any) -> None:
        self.gl = gl
        self.textures: list[int] = []
        self.framebuffers: list[int] = []
        self.vertex_arrays: list[int] = []
        self.programs: list[int] = []

    def texture(self, filtering: int, unit: int = _SPARE_UNIT) -> int:
        """A new texture, bound on texture unit ``unit``."""
        gl = self.gl
        name = int(gl.glGenTextures(1))
        self.textures.append(name)
        gl.glActiveTexture(gl.GL_TEXTURE0 + unit)
        gl.glBindTexture(gl.GL_TEXTURE_2D, name)
        for param, value in ((gl.GL_TEXTURE_MIN_FILTER, filtering), (gl.GL_TEXTURE_MAG_FILTER, filtering),
                             (gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE), (gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)):
            gl.glTexParameteri(gl.GL_TEXTURE_2D, param, value)
        return name

    def framebuffer(self, targets: list[int]) -> int:
        gl = self.gl
        name = int(gl.glGenFramebuffers(1))
        self.framebuffers.append(name)
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, name)
        for i, texture in enumerate(targets):
            gl.glFramebufferTexture2D(gl.GL_FRAMEBUFFER, gl.GL_COLOR_ATTACHMENT0 + i, gl.GL_TEXTURE_2D, texture, 0)
        gl.glDrawBuffers(len(targets), [gl.GL_COLOR_ATTACHMENT0 + i for i in range(len(targets))])
        if gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER) != gl.GL_FRAMEBUFFER_COMPLETE:
            raise RuntimeError("the OpenGL ES driver cannot render to this many float textures")
        return name

    def release(self) -> None:
        gl = self.gl
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
        gl.glBindVertexArray(0)
        gl.glUseProgram(0)
        if self.textures:
            gl.glDeleteTextures(len(self.textures), self.textures)
        if self.framebuffers:
            gl.glDeleteFramebuffers(len(self.framebuffers), self.framebuffers)
        if self.vertex_arrays:
            gl.glDeleteVertexArrays(len(self.vertex_arrays), self.vertex_arrays)
        for program in self.programs:
            gl.glDeleteProgram(program)


def _log(text: Any) -> str:
    return (text.decode(errors="replace") if isinstance(text, bytes) else str(text or "")).strip()


def _compile(gl: Any, kind: int, source: str, what: str) -> int:
    shader = gl.glCreateShader(kind)
    gl.glShaderSource(shader, source)
    gl.glCompileShader(shader)
    if not gl.glGetShaderiv(shader, gl.GL_COMPILE_STATUS):
        message = _log(gl.glGetShaderInfoLog(shader))
        gl.glDeleteShader(shader)
        raise ShaderError(f"the {what} shader does not compile:\n{message}")
    return shader


def _program(objects: _Objects, fragment: str) -> int:
    gl = objects.gl
    vertex = _compile(gl, gl.GL_VERTEX_SHADER, VERTEX_SHADER, "vertex")
    try:
        shader = _compile(gl, gl.GL_FRAGMENT_SHADER, in_highp(fragment), "fragment")
    except ShaderError:
        gl.glDeleteShader(vertex)
        raise
    program = gl.glCreateProgram()
    objects.programs.append(program)
    gl.glAttachShader(program, vertex)
    gl.glAttachShader(program, shader)
    gl.glLinkProgram(program)
    gl.glDeleteShader(vertex)
    gl.glDeleteShader(shader)
    if not gl.glGetProgramiv(program, gl.GL_LINK_STATUS):
        raise ShaderError(f"the shader does not link:\n{_log(gl.glGetProgramInfoLog(program))}")
    return program


def _declared(gl: Any, program: int) -> dict[str, int]:
    """The program's active uniforms: name -> GL type (arrays by their plain name)."""
    out = {}
    for index in range(int(gl.glGetProgramiv(program, gl.GL_ACTIVE_UNIFORMS))):
        name, _size, kind = gl.glGetActiveUniform(program, index)
        out[_log(name).removesuffix("[0]")] = int(kind)
    return out


def _set_number(gl: Any, program: int, declared: dict[str, int], name: str, value: float) -> None:
    kind = declared.get(name)
    if kind is None:
        return
    where = gl.glGetUniformLocation(program, name)
    if kind == gl.GL_FLOAT:
        gl.glUniform1f(where, float(value))
    elif kind in (gl.GL_INT, gl.GL_BOOL):
        gl.glUniform1i(where, int(value))
    elif kind == gl.GL_UNSIGNED_INT:
        gl.glUniform1ui(where, max(0, int(value)))
    else:
        raise ShaderError(f"uniform {name} must be declared as a float, int, uint or bool to receive its value")


def _upload(gl: Any, texture: int, unit: int, image: np.ndarray) -> None:
    """One [H, W, C] image into ``texture`` on ``unit``, bottom row first, as RGBA floats."""
    height, width, channels = image.shape
    rgba = np.empty((height, width, 4), dtype=np.float32)
    if channels >= 3:
        rgba[..., :3] = image[::-1, :, :3]
        rgba[..., 3] = image[::-1, :, 3] if channels >= 4 else 1.0
    else:
        rgba[..., :3] = image[::-1, :, :1]
        rgba[..., 3] = 1.0
    gl.glActiveTexture(gl.GL_TEXTURE0 + unit)
    gl.glBindTexture(gl.GL_TEXTURE_2D, texture)
    gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA32F, width, height, 0, gl.GL_RGBA, gl.GL_FLOAT, rgba)


def render(source: str, width: int, height: int, images: dict[int, np.ndarray],
           uniforms: Uniforms | None = None) -> list[np.ndarray]:
    """Run ``source`` over ``images`` (``u_image<i>``: [B, H, W, C] float arrays), once per batch item.

    The batch is the first image's; an image with fewer items repeats its last
    one. Returns :data:`MAX_OUTPUTS` arrays [B, height, width, 4] (RGBA), zeros
    for the outputs the shader does not write. Raises :class:`ShaderError` for
    the user's mistakes and :class:`~.egl.GLUnavailable` when the machine
    cannot render.
    """
    uniforms = uniforms or Uniforms()
    batch = images[min(images)].shape[0] if images else 1
    outputs, passes = output_count(source), pass_count(source)
    results = [np.zeros((batch, height, width, 4), dtype=np.float32) for _ in range(MAX_OUTPUTS)]
    with egl.current() as ctx:
        gl = ctx.gl
        if "GL_EXT_color_buffer_float" not in ctx.extensions:
            raise egl.GLUnavailable(f"the OpenGL ES driver ({ctx.renderer}) cannot render into float textures "
                                    "(GL_EXT_color_buffer_float)")
        filtering = gl.GL_LINEAR if "GL_OES_texture_float_linear" in ctx.extensions else gl.GL_NEAREST
        objects = _Objects(gl)
        try:
            program = _program(objects, source)
            gl.glUseProgram(program)
            declared = _declared(gl, program)
            vertex_array = int(gl.glGenVertexArrays(1))
            objects.vertex_arrays.append(vertex_array)
            gl.glBindVertexArray(vertex_array)

            targets = [objects.texture(filtering) for _ in range(outputs)]
            for texture in targets:
                gl.glBindTexture(gl.GL_TEXTURE_2D, texture)
                gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA32F, width, height, 0, gl.GL_RGBA, gl.GL_FLOAT, None)
            final = objects.framebuffer(targets)
            scratch: list[tuple[int, int]] = []
            for _ in range(2 if passes > 1 else 0):
                texture = objects.texture(filtering)
                gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA32F, width, height, 0, gl.GL_RGBA, gl.GL_FLOAT, None)
                scratch.append((objects.framebuffer([texture]), texture))

            # every sampler gets its own unit; one with nothing bound there reads (0, 0, 0, 1)
            for i in range(MAX_IMAGES):
                if f"u_image{i}" in declared:
                    gl.glUniform1i(gl.glGetUniformLocation(program, f"u_image{i}"), i)
            for i in range(MAX_CURVES):
                if f"u_curve{i}" in declared:
                    gl.glUniform1i(gl.glGetUniformLocation(program, f"u_curve{i}"), MAX_IMAGES + i)
            if "u_resolution" in declared:
                gl.glUniform2f(gl.glGetUniformLocation(program, "u_resolution"), float(width), float(height))
            for prefix, values in (("u_float", uniforms.floats), ("u_int", uniforms.ints), ("u_bool", uniforms.bools)):
                for i, value in values.items():
                    _set_number(gl, program, declared, f"{prefix}{i}", value)
            for i, table in uniforms.curves.items():
                objects.texture(filtering, MAX_IMAGES + i)
                lut = np.ascontiguousarray(table, dtype=np.float32).reshape(-1)
                gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_R32F, lut.size, 1, 0, gl.GL_RED, gl.GL_FLOAT, lut)
            inputs = {i: objects.texture(filtering, i) for i in images}
            pass_location = gl.glGetUniformLocation(program, "u_pass") if "u_pass" in declared else -1

            gl.glViewport(0, 0, width, height)
            gl.glDisable(gl.GL_BLEND)
            gl.glClearColor(0.0, 0.0, 0.0, 0.0)
            for item in range(batch):
                for i, array in images.items():
                    _upload(gl, inputs[i], i, array[min(item, array.shape[0] - 1)])
                for step in range(passes):
                    if pass_location >= 0:
                        gl.glUniform1i(pass_location, step)
                    if passes > 1:
                        gl.glActiveTexture(gl.GL_TEXTURE0)
                        gl.glBindTexture(gl.GL_TEXTURE_2D, inputs.get(0, 0) if step == 0 else scratch[(step - 1) % 2][1])
                    last = step == passes - 1
                    gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, final if last else scratch[step % 2][0])
                    gl.glClear(gl.GL_COLOR_BUFFER_BIT)
                    gl.glDrawArrays(gl.GL_TRIANGLES, 0, 3)
                for i in range(outputs):
                    pixels = np.empty((height, width, 4), dtype=np.float32)
                    gl.glReadBuffer(gl.GL_COLOR_ATTACHMENT0 + i)
                    gl.glReadPixels(0, 0, width, height, gl.GL_RGBA, gl.GL_FLOAT, pixels)
                    results[i][item] = pixels[::-1]
        finally:
            objects.release()
    return results
