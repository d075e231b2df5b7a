"""GLSL Shader through a real server: uniforms, images, curves, outputs, passes, sizes, errors, the template.

Images go in as exact float arrays (``TestLoad``) and come back through
``TestProbe``. Shaders that read with ``texelFetch`` must give exact results;
those that read with ``texture()`` (linear filtering at float texture
coordinates) are compared within a small tolerance, since the interpolated
coordinate is off a texel centre by a float rounding error and the filter
mixes in a trace of the neighbour. On machines without a GPU this runs on
Mesa's software rasterizer.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from _templates import template

from comfy_kernel.nodes.curves import CurveInput, MonotoneCubicCurve
from comfy_kernel_core_nodes.media import egl, glsl
from comfy_kernel_core_nodes.nodes.image_shader import GLSLShader

HEADER = "#version 300 es\nprecision highp float;\nin vec2 v_texCoord;\n"
FETCH = "texelFetch(u_image0, ivec2(gl_FragCoord.xy), 0)"


def shader(body: str, declarations: str = "uniform sampler2D u_image0;\nout vec4 fragColor;\n") -> str:
    return f"{HEADER}{declarations}void main() {{\n{body}\n}}\n"


def glsl_node(source: str, size_mode: str = "from_input", **inputs) -> dict:
    return {"class_type": "GLSLShader", "inputs": {"fragment_shader": source, "size_mode": size_mode, **inputs}}


def probes(prompt: dict, node: str, outputs: int = 4, prefix: str = "out") -> dict:
    for i in range(outputs):
        prompt[f"probe_{prefix}{i}"] = {"class_type": "TestProbe", "inputs": {"value": [node, i], "name": f"{prefix}{i}"}}
    return prompt


@pytest.fixture(scope="module")
def load(graph_server):
    """``load(name, array)``: writes the float array for TestLoad and returns its node."""
    folder = graph_server.input_dir / "probes"
    folder.mkdir(parents=True, exist_ok=True)

    def make(name: str, array: np.ndarray) -> dict:
        np.save(folder / f"{name}.npy", array.astype(np.float32))
        return {"class_type": "TestLoad", "inputs": {"name": f"{name}.npy"}}

    return make


def test_invert_is_one_minus_the_image_for_every_batch_item(graph_server, load):
    image = np.random.default_rng(1).random((3, 24, 40, 3), dtype=np.float32)
    prompt = {"img": load("invert", image),
              "fetch": glsl_node(shader(f"vec4 c = {FETCH};\nfragColor = vec4(1.0 - c.rgb, c.a);"),
                                 **{"images.image0": ["img", 0]}),
              "sample": glsl_node(shader("vec4 c = texture(u_image0, v_texCoord);\nfragColor = vec4(1.0 - c.rgb, c.a);"),
                                  **{"images.image0": ["img", 0]})}
    probes(prompt, "fetch", prefix="fetch")
    probes(prompt, "sample", 1, prefix="sample")
    out = graph_server.run(prompt)
    assert out["fetch0"].shape == (3, 24, 40, 4)
    assert np.array_equal(out["fetch0"][..., :3], 1.0 - image) and np.all(out["fetch0"][..., 3] == 1.0)
    assert np.abs(out["sample0"][..., :3] - (1.0 - image)).max() < 1e-4
    for unused in ("fetch1", "fetch2", "fetch3"):  # outputs the shader does not write are black and transparent
        assert out[unused].shape == (3, 24, 40, 4) and not out[unused].any()


def test_float_int_and_bool_uniforms_reach_the_shader(graph_server, load):
    declarations = ("uniform sampler2D u_image0;\nuniform float u_float0;\nuniform float u_float1;\n"
                    "uniform int u_int0;\nuniform int u_int1;\nuniform bool u_bool0;\nuniform bool u_bool1;\n"
                    "layout(location = 0) out vec4 fragColor0;\nlayout(location = 1) out vec4 fragColor1;\n")
    body = ("fragColor0 = vec4(u_float0, u_float1, float(u_int0), float(u_int1));\n"
            "fragColor1 = vec4(u_bool0 ? 1.0 : 0.0, u_bool1 ? 1.0 : 0.0, 0.5, 1.0);")
    prompt = {"img": load("uniforms", np.zeros((1, 4, 4, 3))),
              "f0": {"class_type": "PrimitiveFloat", "inputs": {"value": -2.75}},
              "f1": {"class_type": "PrimitiveFloat", "inputs": {"value": 1234.5}},
              "i1": {"class_type": "PrimitiveInt", "inputs": {"value": -70000}},
              "b0": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
              "b1": {"class_type": "PrimitiveBoolean", "inputs": {"value": False}},
              # u_int0 is left unlinked: each value goes to the uniform its slot names, the rest stay 0
              "glsl": glsl_node(shader(body, declarations), **{
                  "images.image0": ["img", 0], "floats.u_float0": ["f0", 0], "floats.u_float1": ["f1", 0],
                  "ints.u_int1": ["i1", 0], "bools.u_bool0": ["b0", 0], "bools.u_bool1": ["b1", 0]})}
    out = graph_server.run(probes(prompt, "glsl", 2))
    assert np.all(out["out0"] == np.float32([-2.75, 1234.5, 0.0, -70000.0]))
    assert np.all(out["out1"] == np.float32([1.0, 0.0, 0.5, 1.0]))


def test_two_images_and_an_alpha_channel(graph_server, load):
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 8, 6, 4), dtype=np.float32), rng.random((1, 8, 6, 3), dtype=np.float32)
    declarations = "uniform sampler2D u_image0;\nuniform sampler2D u_image1;\nout vec4 fragColor;\n"
    body = "ivec2 p = ivec2(gl_FragCoord.xy);\nfragColor = texelFetch(u_image0, p, 0) - texelFetch(u_image1, p, 0);"
    prompt = {"a": load("two_a", a), "b": load("two_b", b),
              "glsl": glsl_node(shader(body, declarations), **{"images.image0": ["a", 0], "images.image1": ["b", 0]})}
    out = graph_server.run(probes(prompt, "glsl", 1))["out0"]
    # the batch is the first image's; the second, with one item, serves both; RGB images get alpha 1
    assert np.array_equal(out[..., :3], a[..., :3] - b[..., :3])
    assert np.array_equal(out[..., 3], a[..., 3] - 1.0)


def test_curves_arrive_as_lookup_tables(graph_server, load):
    x = np.linspace(0.0, 1.0, 64, dtype=np.float32)
    image = np.stack([np.stack([x, x[::-1], np.full_like(x, 0.3)], axis=-1)] * 2)[None]  # [1, 2, 64, 3]
    points = [[0, 0], [0.3, 0.7], [0.8, 0.5], [1, 1]]
    declarations = "uniform sampler2D u_image0;\nuniform sampler2D u_curve0;\nuniform sampler2D u_curve1;\nout vec4 fragColor;\n"
    body = ("vec4 c = " + FETCH + ";\n"
            "float at = c.r * 255.0; int lo = int(floor(at)); int hi = min(lo + 1, 255);\n"
            "float a = texelFetch(u_curve0, ivec2(lo, 0), 0).r, b = texelFetch(u_curve0, ivec2(hi, 0), 0).r;\n"
            "fragColor = vec4(a + (at - float(lo)) * (b - a), texture(u_curve0, vec2(0.5 / 256.0, 0.5)).r,\n"
            "                 float(textureSize(u_curve0, 0).x), texture(u_curve1, vec2(c.g, 0.5)).r);")
    prompt = {"img": load("curve", image),
              "curve": {"class_type": "CurveEditor", "inputs": {"curve": {"points": points,
                                                                          "interpolation": "monotone_cubic"}}},
              "glsl": glsl_node(shader(body, declarations), **{"images.image0": ["img", 0],
                                                               "curves.u_curve0": ["curve", 0]})}
    out = graph_server.run(probes(prompt, "glsl", 1))["out0"][0, 0]
    lut = MonotoneCubicCurve(points).to_lut(256)
    at = x * 255.0
    lo = np.floor(at).astype(int)
    expected = lut[lo] + (at - lo) * (lut[np.minimum(lo + 1, 255)] - lut[lo])
    assert np.abs(out[:, 0] - expected).max() < 1e-5
    assert np.abs(out[:, 1] - lut[0]).max() < 1e-6 and np.all(out[:, 2] == 256.0)
    assert not out[:, 3].any()  # a curve slot left empty reads nothing, not another texture


def test_four_outputs(graph_server, load):
    image = np.random.default_rng(3).random((2, 5, 7, 4), dtype=np.float32)
    declarations = "uniform sampler2D u_image0;\n" + "".join(
        f"layout(location = {i}) out vec4 fragColor{i};\n" for i in range(4))
    body = f"vec4 c = {FETCH};\n" + "".join(f"fragColor{i} = vec4(vec3(c[{i}]), 1.0);\n" for i in range(4))
    prompt = probes({"img": load("channels", image),
                     "glsl": glsl_node(shader(body, declarations), **{"images.image0": ["img", 0]})}, "glsl")
    out = graph_server.run(prompt)
    for i in range(4):
        assert np.array_equal(out[f"out{i}"][..., 0], image[..., i]) and np.all(out[f"out{i}"][..., 3] == 1.0)


def test_passes_read_the_previous_pass(graph_server, load):
    image = np.random.default_rng(4).random((1, 6, 9, 3), dtype=np.float32) * 0.25
    source = shader(f"fragColor = {FETCH} + vec4(0.125 * float(u_pass + 1), 0.0, 0.0, 0.0);",
                    "#pragma passes 3\nuniform sampler2D u_image0;\nuniform int u_pass;\nout vec4 fragColor;\n")
    prompt = probes({"img": load("passes", image),
                     "glsl": glsl_node(source, **{"images.image0": ["img", 0]})}, "glsl", 1)
    out = graph_server.run(prompt)["out0"]
    assert np.allclose(out[..., 0], image[..., 0] + 0.125 * (1 + 2 + 3), atol=1e-6)
    assert np.array_equal(out[..., 1:3], image[..., 1:3])


def test_output_size_from_the_input_or_custom(graph_server, load):
    image = np.random.default_rng(5).random((2, 12, 16, 3), dtype=np.float32)
    body = "fragColor = vec4(u_resolution, gl_FragCoord.xy);"
    declarations = "uniform sampler2D u_image0;\nuniform vec2 u_resolution;\nout vec4 fragColor;\n"
    stretch = shader("fragColor = texture(u_image0, v_texCoord);")
    prompt = {"img": load("sizes", image),
              "input": glsl_node(shader(body, declarations), **{"images.image0": ["img", 0]}),
              "custom": glsl_node(shader(body, declarations), "custom", **{
                  "size_mode.width": 40, "size_mode.height": 6, "images.image0": ["img", 0]}),
              "half": glsl_node(stretch, "custom", **{"size_mode.width": 8, "size_mode.height": 6,
                                                      "images.image0": ["img", 0]})}
    probes(prompt, "input", 1, "input")
    probes(prompt, "custom", 1, "custom")
    probes(prompt, "half", 1, "half")
    out = graph_server.run(prompt)
    assert out["input0"].shape == (2, 12, 16, 4) and np.all(out["input0"][..., :2] == (16, 12))
    assert out["custom0"].shape == (2, 6, 40, 4) and np.all(out["custom0"][..., :2] == (40, 6))
    assert out["custom0"][0, -1, 0, 2:].tolist() == [0.5, 0.5]  # gl_FragCoord: bottom-left pixel's centre
    # half the size in each direction: each output pixel sits where four input pixels meet
    quads = (image[:, 0::2, 0::2] + image[:, 1::2, 0::2] + image[:, 0::2, 1::2] + image[:, 1::2, 1::2]) / 4
    assert out["half0"].shape == (2, 6, 8, 4) and np.abs(out["half0"][..., :3] - quads).max() < 1e-4


def test_image_rows_are_not_flipped(graph_server, load):
    rows = np.linspace(0.0, 1.0, 10, dtype=np.float32)
    image = np.broadcast_to(rows[None, :, None, None], (1, 10, 4, 3)).copy()  # black at the top row
    prompt = {"img": load("gradient", image),
              "copy": glsl_node(shader("fragColor = texture(u_image0, v_texCoord);")),
              "coords": glsl_node(shader("fragColor = vec4(v_texCoord, 0.0, 1.0);"))}
    prompt["copy"]["inputs"]["images.image0"] = prompt["coords"]["inputs"]["images.image0"] = ["img", 0]
    probes(prompt, "copy", 1, "copy")
    probes(prompt, "coords", 1, "coords")
    out = graph_server.run(prompt)
    assert np.abs(out["copy0"][0, :, 0, 0] - rows).max() < 1e-5
    # GL's convention, as ComfyUI has it: v_texCoord (0, 0) is the bottom-left corner, y grows upwards
    assert out["coords0"][0, 0, 0, :2] == pytest.approx([0.125, 0.95], abs=1e-6)
    assert out["coords0"][0, -1, -1, :2] == pytest.approx([0.875, 0.05], abs=1e-6)


def test_compile_errors_reach_the_client_and_the_server_keeps_serving(graph_server, load):
    broken = shader("vec4 c = texture(u_image0, v_texCoord);\nfragColor = vec4(1.0 - c.rgb, undefined_name);")
    prompt = {"img": load("broken", np.zeros((1, 4, 4, 3))), "glsl": glsl_node(broken, **{"images.image0": ["img", 0]})}
    probes(prompt, "glsl", 1)
    error = graph_server.error(prompt)
    assert error["node_type"] == "GLSLShader"
    message = error["exception_message"]
    assert "fragment shader does not compile" in message and "undefined_name" in message
    assert "0:8(" in message  # the compiler's line numbers are those of the user's source
    prompt["glsl"] = glsl_node(shader("fragColor = vec4(0.25);"), **{"images.image0": ["img", 0]})
    assert np.all(graph_server.run(prompt)["out0"] == 0.25)


def test_previews_of_inputs_and_output(graph_server, load):
    prompt = {"img": load("preview", np.full((2, 4, 6, 3), 0.5)),
              "glsl": glsl_node(shader("fragColor = vec4(1.0, 0.0, 0.0, 1.0);"), **{"images.image0": ["img", 0]})}
    _, outputs = graph_server.run_with_outputs(probes(prompt, "glsl", 1))
    shown = outputs["glsl"]
    assert len(shown["input_images"]) == 2 and len(shown["images"]) == 2
    assert all(item["type"] == "temp" and item["filename"].startswith("GLSLShader_") for item in shown["images"])


def test_missing_gl_libraries_give_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(egl, "LIBRARIES", {"libEGL_not_here.so.1": "libegl1"})
    monkeypatch.setattr(egl, "_context", None)
    monkeypatch.setattr(egl, "_failure", None)
    with pytest.raises(egl.GLUnavailable, match=r"missing: libEGL_not_here\.so\.1\. .*apt-get install libegl1"):
        GLSLShader.execute(fragment_shader=shader("fragColor = vec4(1.0);"), size_mode={"size_mode": "from_input"},
                           images={"image0": torch.zeros(1, 2, 2, 3)})
    with pytest.raises(egl.GLUnavailable, match="libEGL_not_here"):  # remembered, not tried again
        glsl.render(shader("fragColor = vec4(1.0);"), 2, 2, {0: np.zeros((1, 2, 2, 3), np.float32)})


def test_the_server_starts_without_loading_gl():
    code = ("import sys, comfy_kernel_core_nodes.plugin; from comfy_kernel_core_nodes.nodes import NODES; "
            "[n.cls.INPUT_TYPES() for n in NODES]; "
            "print(any(m.split('.')[0] == 'OpenGL' or m.endswith(('media.egl', 'media.glsl')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_precision_is_highp():
    # Mesa's software rasterizer computes mediump at 16 bits: 70000 would be inf, 0x0a9299's red byte wrong
    source = ("#version 300 es\nprecision mediump float;\nuniform lowp sampler2D u_image0;\nuniform float u_float0;\n"
              "uniform int u_int0;\nout vec4 fragColor;\nvoid main() {\n"
              "fragColor = vec4(u_float0 + 1.0, float((u_int0 >> 16) & 255), float(u_int0), texture(u_image0, vec2(0.5)).r);\n}\n")
    image = np.full((1, 1, 1, 3), 1 / 3, np.float32)
    out = glsl.render(source, 1, 1, {0: image}, glsl.Uniforms(floats={0: 70000.0}, ints={0: 0x0A9299}))[0]
    assert out[0, 0, 0].tolist() == [70001.0, 10.0, 0x0A9299, np.float32(1 / 3)]
    assert glsl.in_highp(source).count("\n") == source.count("\n") + 2 and "#line 2" in glsl.in_highp(source)


def test_renders_from_several_threads_one_at_a_time():
    from concurrent.futures import ThreadPoolExecutor

    source = shader(f"fragColor = {FETCH} * 2.0;")
    images = [np.full((1, 3, 5, 3), i / 10, np.float32) for i in range(6)]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda image: glsl.render(source, 5, 3, {0: image})[0], images))
    for i, out in enumerate(results):
        assert np.allclose(out[..., :3], 2 * i / 10) and np.all(out[..., 3] == 2.0)


# --- the basic_image_color_adjustment template -------------------------------------------------------------------


def _levels(c: np.ndarray, in_black: float, in_white: float, gamma: float, out_black: float,
            out_white: float) -> np.ndarray:
    t = np.clip((c - in_black / 255) / max(in_white / 255 - in_black / 255, 1e-4), 0, 1) ** (1 / gamma)
    return out_black / 255 + (out_white / 255 - out_black / 255) * t


def _brightness_contrast(c: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    linear = np.maximum(c, 0) ** 2.2
    linear = (linear - 0.18) * np.clip(contrast / 100 + 1, 0, 2) + np.clip(brightness / 100, -1, 1) + 0.18
    return np.clip(linear, 0, 1) ** (1 / 2.2)


def _curves(c: np.ndarray, master: CurveInput, channels: list[CurveInput]) -> np.ndarray:
    def apply(curve: CurveInput, v: np.ndarray) -> np.ndarray:
        lut = curve.to_lut(256)
        at = np.clip(v, 0, 1) * 255
        lo = np.floor(at).astype(int)
        return lut[lo] + (at - lo) * (lut[np.minimum(lo + 1, 255)] - lut[lo])

    return np.stack([apply(master, apply(channels[i], c[..., i])) for i in range(3)], axis=-1)


def _shader_of(prompt: dict, link: list) -> str:
    return prompt[link[0]]["inputs"]["fragment_shader"]


def test_basic_image_color_adjustment_template(graph_server):
    from PIL import Image

    rng = np.random.default_rng(6)
    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([x / 63, y / 47, 0.5 + 0.4 * np.sin(x / 5.0) * np.cos(y / 7.0)], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 0.05, pixels.shape), 0, 1)
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(graph_server.input_dir / "example.png")
    image = np.asarray(Image.open(graph_server.input_dir / "example.png"), dtype=np.float32) / 255

    converted = graph_server.server.post("/api/workflows/convert",
                                         json={"workflow": template("basic_image_color_adjustment")}).json()
    assert converted["missing_nodes"] == []
    prompt = converted["prompt"]
    assert sum(n["class_type"] == "GLSLShader" for n in prompt.values()) == 10
    shown = {}
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "PreviewImage":
            source, slot = node["inputs"]["images"]
            prompt[node_id] = {"class_type": "TestProbe", "inputs": {"value": [source, slot], "name": node_id}}
            shown[node_id] = (source, slot)
    assert len(shown) == 13
    # Color Adjustment once more with its saturation (u_float3) at -100 instead of the template's 0
    (adjust_id,) = [i for i, n in prompt.items() if "SKIN_PROTECTION" in n["inputs"].get("fragment_shader", "")]
    prompt["grey"] = {"class_type": "PrimitiveFloat", "inputs": {"value": -100.0}}
    prompt["desaturated"] = {**prompt[adjust_id], "inputs": {**prompt[adjust_id]["inputs"], "floats.u_float3": ["grey", 0]}}
    prompt["probe_desaturated"] = {"class_type": "TestProbe", "inputs": {"value": ["desaturated", 0], "name": "grey"}}
    out = graph_server.run(prompt)

    def result(marker: str, slot: int = 0) -> np.ndarray:
        (name,) = [n for n, (source, s) in shown.items() if s == slot and marker in _shader_of(prompt, [source])]
        assert out[name].shape == (1, 48, 64, 4) and np.isfinite(out[name]).all()
        return out[name][0]

    # Color Adjustment with its settings at 0 leaves the image as it is
    assert np.abs(result("SKIN_PROTECTION")[..., :3] - image).max() < 1e-4
    assert np.all(result("SKIN_PROTECTION")[..., 3] == 1.0)
    grey = image @ np.float32([0.299, 0.587, 0.114])
    assert np.abs(out["grey"][0, ..., :3] - grey[..., None]).max() < 1e-4
    # the template's own settings: brightness 13, contrast 51; levels 85..255, gamma 4.33, output 36..201
    assert np.abs(result("Brightness slider")[..., :3] - _brightness_contrast(image, 13, 51)).max() < 2e-4
    levels = np.abs(result("Levels Adjustment")[..., :3] - _levels(image, 85, 255, 4.33, 36, 201))
    at_black_point = np.abs(image - 85 / 255) < 1e-6  # x ** (1 / 4.33) there turns float rounding into ~0.02
    assert levels[~at_black_point].max() < 2e-4 and levels.max() < 0.05
    for i in range(4):  # Image Channels: one grey image per channel, alpha 1 for an RGB input
        expected = image[..., i] if i < 3 else np.ones_like(image[..., 0])
        assert np.abs(result("Output each channel", i)[..., 0] - expected).max() < 1e-4
    (curves_node,) = [n for n in prompt.values() if "sampler2D u_curve1" in n["inputs"].get("fragment_shader", "")]
    curves = [CurveInput.from_raw(prompt[curves_node["inputs"][f"curves.u_curve{i}"][0]]["inputs"]["curve"]) for i in range(4)]
    assert np.abs(result("sampler2D u_curve1")[..., :3] - _curves(image, curves[0], curves[1:])).max() < 2e-4
    for marker in ("GOLDEN_ANGLE", "grain amount", "preserve luminosity", "MODE_SWIRL", "Color Space: 0=HSL"):
        assert np.abs(result(marker)[..., :3] - image).max() > 0.01
