"""UI→API conversion over HTTP: the rules one by one, queueing by id, and the shipped workflow templates."""

from __future__ import annotations

import glob
import json
import os
import time

import pytest
from hub_helpers import disable_all_but, headers

from comfy_kernel.nodes.io import MATCH_TYPE, expand_inputs
from comfy_kernel.testing import ServerProcess

USER = headers("converter")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".png", ".jpg", ".jpeg", ".webp")
#: What loaders that check their input file themselves (LoadVideo, LoadAudio, LoadImage) say when it is absent.
MISSING_INPUT = ("Invalid video file: ", "Invalid audio file: ", "Invalid image file: ")
MEDIA_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".wav", ".mp3", ".flac", ".opus", ".ogg", ".m4a")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = [*disable_all_but("hub", "core_nodes"), "--multi-user"]
    with ServerProcess(tmp_path_factory.mktemp("convert"), *args) as srv:
        yield srv


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/api/object_info").json()


def convert(server, workflow):
    r = server.post("/api/workflows/convert", json={"workflow": workflow}, headers=USER)
    assert r.status_code == 200, r.text
    return r.json()


def node(id, type, widgets=None, inputs=(), outputs=(), mode=0, **extra):
    return {"id": id, "type": type, "mode": mode, "widgets_values": widgets if widgets is not None else [],
            "inputs": [{"name": n, "type": t, "link": link, **({"widget": {"name": n}} if w else {})}
                       for n, t, link, w in inputs],
            "outputs": [{"name": n, "type": t, "links": links} for n, t, links in outputs], **extra}


def txt2img():
    """A classic SD graph with a reroute, a primitive, a muted and a bypassed node."""
    return {
        "nodes": [
            node(4, "CheckpointLoaderSimple", ["model.safetensors"],
                 outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [2, 3]), ("VAE", "VAE", [8])]),
            node(6, "CLIPTextEncode", ["a cat"], inputs=[("clip", "CLIP", 2, False)],
                 outputs=[("CONDITIONING", "CONDITIONING", [4])]),
            node(7, "CLIPTextEncode", ["ugly"], inputs=[("clip", "CLIP", 3, False)],
                 outputs=[("CONDITIONING", "CONDITIONING", [5])]),
            node(5, "EmptyLatentImage", [512, 512, 1], inputs=[("width", "INT", 10, True)],
                 outputs=[("LATENT", "LATENT", [6])]),
            node(3, "KSampler", [42, "randomize", 20, 7.5, "euler", "normal", 1.0],
                 inputs=[("model", "MODEL", 1, False), ("positive", "CONDITIONING", 4, False),
                         ("negative", "CONDITIONING", 5, False), ("latent_image", "LATENT", 6, False)],
                 outputs=[("LATENT", "LATENT", [7])]),
            node(8, "VAEDecode", inputs=[("samples", "LATENT", 7, False), ("vae", "VAE", 9, False)],
                 outputs=[("IMAGE", "IMAGE", [11])]),
            node(20, "Reroute", inputs=[("", "*", 8, False)], outputs=[("", "VAE", [9])]),
            node(21, "PrimitiveNode", [768, "fixed"], outputs=[("INT", "INT", [10])]),
            node(30, "ImageInvert", inputs=[("image", "IMAGE", 11, False)], outputs=[("IMAGE", "IMAGE", [12])],
                 mode=4),
            node(9, "SaveImage", ["out"], inputs=[("images", "IMAGE", 12, False)]),
            node(31, "PreviewImage", inputs=[("images", "IMAGE", None, False)], mode=2),
            node(32, "Note", ["just a note"]),
        ],
        "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 4, 1, 6, 0, "CLIP"], [3, 4, 1, 7, 0, "CLIP"],
                  [4, 6, 0, 3, 1, "CONDITIONING"], [5, 7, 0, 3, 2, "CONDITIONING"], [6, 5, 0, 3, 3, "LATENT"],
                  [7, 3, 0, 8, 0, "LATENT"], [8, 4, 2, 20, 0, "VAE"], [9, 20, 0, 8, 1, "VAE"],
                  [10, 21, 0, 5, 0, "INT"], [11, 8, 0, 30, 0, "IMAGE"], [12, 30, 0, 9, 0, "IMAGE"]],
    }


def test_widgets_links_reroutes_primitives_mute_bypass(server):
    out = convert(server, txt2img())
    prompt = out["prompt"]
    assert out["missing_nodes"] == []
    assert set(prompt) == {"3", "4", "5", "6", "7", "8", "9"}  # no reroute, primitive, note, muted, bypassed
    assert prompt["3"]["inputs"] == {"seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                                     "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                     "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}
    assert prompt["5"]["inputs"] == {"width": 768, "height": 512, "batch_size": 1}  # primitive wins
    assert prompt["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}  # through the reroute
    assert prompt["9"]["inputs"] == {"filename_prefix": "out", "images": ["8", 0]}  # around the bypass
    assert prompt["4"]["class_type"] == "CheckpointLoaderSimple" and prompt["6"]["_meta"]["title"]


def test_widget_value_details(server):
    """Old boolean control values, upload button values, named widget values."""
    wf = {"nodes": [
        node(1, "KSampler", [7, True, 12, 6.0, "euler", "karras", 0.5]),
        node(2, "LoadImage", ["cat.png", "image"]),
        node(3, "EmptyImage", {"width": 9, "height": 10, "batch_size": 1, "color": 5}),
        node(4, "EmptyLatentImage", [64]),
        node(5, "CLIPTextEncode", ["a {red|red} cat /* hidden */on {a {mat|mat}|a {mat|mat}} \\{kept\\} // gone"]),
    ], "links": []}
    out = convert(server, wf)
    prompt = out["prompt"]
    assert prompt["1"]["inputs"] == {"seed": 7, "steps": 12, "cfg": 6.0, "sampler_name": "euler",
                                     "scheduler": "karras", "denoise": 0.5}
    assert prompt["2"]["inputs"] == {"image": "cat.png"}
    assert prompt["3"]["inputs"] == {"width": 9, "height": 10, "batch_size": 1, "color": 5}
    assert prompt["4"]["inputs"] == {"width": 64}
    assert prompt["5"]["inputs"] == {"text": "a red cat on a mat {kept} "}  # dynamic prompt, as the frontend
    assert any("EmptyLatentImage" in w and "height" in w for w in out["warnings"])


def test_v3_widgets_dynamic_combos_and_frontend_only_values(server):
    """A dynamic combo's choice is followed by its option's widgets; lists are wrapped; an advanced widget
    saved before it existed takes its default; the image-compare widget gets the value the frontend sends."""
    boxes = [{"x": 1, "y": 2, "width": 3, "height": 4}, {"x": 5, "y": 6, "width": 7, "height": 8}]
    wf = {"nodes": [
        node(1, "ResizeImageMaskNode", ["scale dimensions", 10, 12, "center", "lanczos"]),
        node(2, "SaveImageAdvanced", ["out", "avif", "auto", "sRGB", 20, "animated", 8.0, 1]),
        node(3, "ResolutionSelector", ["1:1 (Square)", 2]),
        node(4, "ImageCompare", []),
        node(5, "CreateBoundingBoxes", [64, 64, boxes, []]),
        node(6, "ColorToRGBInt", ["#102030"]),
    ], "links": []}
    out = convert(server, wf)
    prompt = out["prompt"]
    assert prompt["1"]["inputs"] == {"resize_type": "scale dimensions", "resize_type.width": 10,
                                     "resize_type.height": 12, "resize_type.crop": "center",
                                     "scale_method": "lanczos"}
    assert prompt["2"]["inputs"] == {"filename_prefix": "out", "format": "avif", "format.bit_depth": "auto",
                                     "format.input_color_space": "sRGB", "format.crf": 20,
                                     "format.save_mode": "animated", "format.save_mode.fps": 8.0,
                                     "format.save_mode.loop_count": 1}
    assert prompt["3"]["inputs"] == {"aspect_ratio": "1:1 (Square)", "megapixels": 2, "multiple": 8}
    assert prompt["4"]["inputs"] == {"compare_view": {"__value__": ["", ""]}}
    assert prompt["5"]["inputs"] == {"width": 64, "height": 64, "editor_state": {"__value__": boxes},
                                     "last_incoming": {"__value__": []}}
    assert prompt["6"]["inputs"] == {"color": "#102030"}
    assert not out["warnings"]


def test_optional_widget_saved_before_it_existed_is_left_out(server):
    """TextGenerate gained the optional ``mtp`` after some templates were saved: those leave it out (the node
    takes its default) without a warning; a missing required value still warns."""
    wf = {"nodes": [node(1, "TextGenerate", ["hi", 512, "on", 0.7, 64, 0.95, 0.05, 1.05, 0, 0, True, True]),
                    node(2, "EmptyLatentImage", [64])], "links": []}
    out = convert(server, wf)
    inputs = out["prompt"]["1"]["inputs"]
    assert inputs["prompt"] == "hi" and inputs["thinking"] is True and "mtp" not in inputs
    assert [w for w in out["warnings"] if "no widget value" in w] == [
        "node 2 (EmptyLatentImage): no widget value for height, batch_size"]


def test_bypass_picks_the_input_by_type(server):
    """Output 0 (LATENT) of a bypassed node whose slot 0 is a MASK passes its LATENT input through."""
    wf = {"nodes": [
        node(1, "EmptyLatentImage", [64, 64, 1], outputs=[("LATENT", "LATENT", [1])]),
        node(2, "LoadImageMask", ["m.png", "alpha", "image"], outputs=[("MASK", "MASK", [2])]),
        node(3, "SetLatentNoiseMask", inputs=[("mask", "MASK", 2, False), ("samples", "LATENT", 1, False)],
             outputs=[("LATENT", "LATENT", [3])], mode=4),
        node(4, "RepeatLatentBatch", [2], inputs=[("samples", "LATENT", 3, False)]),
    ], "links": [[1, 1, 0, 3, 1, "LATENT"], [2, 2, 0, 3, 0, "MASK"], [3, 3, 0, 4, 0, "LATENT"]]}
    prompt = convert(server, wf)["prompt"]
    assert prompt["4"]["inputs"] == {"amount": 2, "samples": ["1", 0]}
    assert prompt["2"]["inputs"] == {"image": "m.png", "channel": "alpha"}


def test_muted_source_leaves_input_out(server):
    wf = {"nodes": [node(1, "EmptyImage", [64, 64, 1, 0], outputs=[("IMAGE", "IMAGE", [1])], mode=2),
                    node(2, "PreviewImage", inputs=[("images", "IMAGE", 1, False)])],
          "links": [[1, 1, 0, 2, 0, "IMAGE"]]}
    assert convert(server, wf)["prompt"] == {"2": {"inputs": {}, "class_type": "PreviewImage",
                                                   "_meta": {"title": "Preview Image"}}}


def test_subgraphs_are_flattened(server):
    inner = {
        "id": "sg-invert", "name": "Invert twice",
        "inputs": [{"name": "image", "type": "IMAGE", "linkIds": [101]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [103]}],
        "nodes": [node(1, "ImageInvert", inputs=[("image", "IMAGE", 101, False)], outputs=[("IMAGE", "IMAGE", [102])]),
                  node(2, "ImageInvert", inputs=[("image", "IMAGE", 102, False)], outputs=[("IMAGE", "IMAGE", [103])])],
        "links": [{"id": 101, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "IMAGE"},
                  {"id": 102, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"},
                  {"id": 103, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}],
    }
    outer = {
        "id": "sg-outer", "name": "Make and invert",
        "inputs": [{"name": "width", "type": "INT", "linkIds": [201]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [203]}],
        "nodes": [node(1, "EmptyImage", [32, 32, 1, 0], inputs=[("width", "INT", 201, True)],
                       outputs=[("IMAGE", "IMAGE", [202])]),
                  node(2, "sg-invert", inputs=[("image", "IMAGE", 202, False)], outputs=[("IMAGE", "IMAGE", [203])])],
        "links": [{"id": 201, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "INT"},
                  {"id": 202, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"},
                  {"id": 203, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"}],
    }
    wf = {"nodes": [node(5, "sg-outer", [48], inputs=[("width", "INT", None, True)],
                         outputs=[("IMAGE", "IMAGE", [1])]),
                    node(6, "PreviewImage", inputs=[("images", "IMAGE", 1, False)])],
          "links": [[1, 5, 0, 6, 0, "IMAGE"]], "definitions": {"subgraphs": [inner, outer]}}
    prompt = convert(server, wf)["prompt"]
    assert set(prompt) == {"5:1", "5:2:1", "5:2:2", "6"}
    assert prompt["6"]["inputs"] == {"images": ["5:2:2", 0]}
    assert prompt["5:2:2"]["inputs"] == {"image": ["5:2:1", 0]}
    assert prompt["5:2:1"]["inputs"] == {"image": ["5:1", 0]}
    assert prompt["5:1"]["inputs"]["width"] == 48  # the instance's widget value for the subgraph input
    # A bypassed instance passes its input through; a muted one drops out.
    wf["nodes"][0]["mode"] = 2
    assert set(convert(server, wf)["prompt"]) == {"6"}


def test_api_format_passes_through_and_junk_is_refused(server):
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}
    assert convert(server, api)["prompt"] == api
    assert server.post("/api/workflows/convert", json={"nodes": 3}, headers=USER).status_code == 422
    out = convert(server, {"nodes": [node(1, "NoSuchNode", [1])], "links": []})
    assert out["missing_nodes"] == ["NoSuchNode"]


def wait_history(server, prompt_id, user=USER, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = server.get(f"/api/history/{prompt_id}", headers=user).json()
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(0.1)
    raise AssertionError("prompt did not finish")


def test_queue_saved_and_published_workflow_by_id(server):
    wf = {"nodes": [node(1, "EmptyImage", [16, 16, 1, 0], outputs=[("IMAGE", "IMAGE", [1])]),
                    node(2, "ImageInvert", inputs=[("image", "IMAGE", 1, False)], outputs=[("IMAGE", "IMAGE", [2])],
                         mode=4),
                    node(3, "PreviewImage", inputs=[("images", "IMAGE", 2, False)])],
          "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]]}
    saved = server.post("/api/workflows", json={"name": "tiny", "workflow_json": wf}, headers=USER).json()
    r = server.post(f"/api/workflows/{saved['id']}/queue", json={"client_id": "c1"}, headers=USER)
    assert r.status_code == 200, r.text
    entry = wait_history(server, r.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert set(entry["prompt"][2]) == {"1", "3"}
    assert entry["prompt"][3]["extra_pnginfo"]["workflow"] == wf
    assert server.post(f"/api/workflows/{saved['id']}/queue", headers=headers("other")).status_code == 404
    assert server.post(f"/api/workflows/{saved['id']}/queue", params={"version": 3},
                       headers=USER).status_code == 404
    # A published workflow can be queued by anyone through its share id.
    share = server.post(f"/api/workflows/{saved['id']}/publish", json={"asset_ids": []}, headers=USER)
    assert share.status_code == 200, share.text
    r = server.post(f"/api/workflows/published/{share.json()['share_id']}/queue", headers=headers("other"))
    assert r.status_code == 200, r.text
    assert wait_history(server, r.json()["prompt_id"], headers("other"))["status"]["status_str"] == "success"
    # Invalid prompts come back with the executor's validation errors.
    broken = server.post("/api/workflows", json={"workflow_json": {"nodes": [node(3, "PreviewImage")],
                                                                   "links": []}}, headers=USER).json()
    r = server.post(f"/api/workflows/{broken['id']}/queue", headers=USER)
    assert r.status_code == 400 and "node_errors" in r.json()
    missing = server.post("/api/workflows", json={"workflow_json": {"nodes": [node(1, "Nope")], "links": []}},
                          headers=USER).json()
    r = server.post(f"/api/workflows/{missing['id']}/queue", headers=USER)
    assert r.status_code == 400 and r.json()["missing_nodes"] == ["Nope"]


# --- the shipped workflow templates ---------------------------------------------


def template_files() -> list[str]:
    try:
        import comfyui_workflow_templates_json as package
    except ImportError:
        return []
    folder = os.path.join(os.path.dirname(package.__file__), "templates")
    return sorted(f for f in glob.glob(os.path.join(folder, "*.json")) if not os.path.basename(f).startswith("index"))


def widget_value_ok(kind, value) -> bool:
    if isinstance(kind, list) or kind == "COMBO":
        return isinstance(value, (str, int, float, bool))
    if kind == "INT":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if kind == "FLOAT":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    return True


def structural_problems(prompt: dict, object_info: dict, mismatches: list[str]) -> list[str]:
    """Checks independent of the converter: every installed node has its required inputs, values of
    the right kind, and links to existing outputs of a compatible type."""
    problems = []
    for node_id, entry in prompt.items():
        info = object_info.get(entry["class_type"])
        if info is None:
            continue
        # V3 dynamic inputs (Autogrow ``values.a``, DynamicCombo options) expand per node, as the server does
        declared = expand_inputs(info["input"], entry["inputs"]).declared
        specs = {name: spec for name, (_section, spec) in declared.items()}
        for name, (section, _spec) in declared.items():
            if section == "required" and name not in entry["inputs"]:
                problems.append(f"{node_id} {entry['class_type']}: required input {name} missing")
        for name, value in entry["inputs"].items():
            spec = specs.get(name)
            if spec is None:
                # A template saved with a newer version of the node (CreateVideo's bit_depth, ...): a node
                # definition difference, not a conversion error; ComfyUI ignores inputs a node lacks.
                mismatches.append(f"{node_id} {entry['class_type']}: unknown input {name}")
                continue
            if isinstance(value, list):
                source = prompt.get(value[0])
                if source is None:
                    problems.append(f"{node_id}: {name} links to missing node {value[0]}")
                    continue
                source_info = object_info.get(source["class_type"])
                if source_info is not None:
                    outputs = source_info["output"]
                    if not 0 <= value[1] < len(outputs):
                        # The template's node has more outputs than the installed one: a node
                        # definition difference, not a conversion error.
                        mismatches.append(f"{node_id}: {name} links to output {value[1]} of {source['class_type']}")
                    elif not isinstance(spec[0], list) and "*" not in (spec[0], outputs[value[1]]) and \
                            MATCH_TYPE not in (spec[0], outputs[value[1]]) and \
                            not set(str(spec[0]).split(",")) & set(str(outputs[value[1]]).split(",")) and not isinstance(outputs[value[1]],
                                                                                                list):
                        problems.append(f"{node_id}: {name} wants {spec[0]}, gets {outputs[value[1]]}")
            elif not widget_value_ok(spec[0], value):
                problems.append(f"{node_id} {entry['class_type']}: {name}={value!r} is not a {spec[0]}")
    return problems


# Text encoder families the loaders do not offer yet (they come with their model families).
FAMILY_INPUTS = {("CLIPLoader", "type"), ("DualCLIPLoader", "type")}


def _missing_file_or_family(error: dict, class_type: str) -> bool:
    extra = error.get("extra_info", {})
    if error["type"] == "value_not_in_list":
        if (class_type, extra.get("input_name")) in FAMILY_INPUTS:
            return True
        return str(extra.get("received_value", error["details"])).lower().rstrip("'\"").endswith(MODEL_SUFFIXES)
    # LoadImage, LoadVideo and LoadAudio check the file themselves: "Invalid image file: <name>"
    return error["type"] == "custom_validation_failed" and any(m in error["details"] for m in MISSING_INPUT) and \
        error["details"].lower().endswith(MODEL_SUFFIXES + MEDIA_SUFFIXES)


def only_missing_files(body: dict) -> bool:
    """A validation answer whose only complaints are model or input files this server does not have
    (or a text encoder family the loaders do not offer yet)."""
    errors = [(e, ne.get("class_type", "")) for ne in (body.get("node_errors") or {}).values()
              for e in ne.get("errors", [])]
    return bool(errors) and all(_missing_file_or_family(e, kind) for e, kind in errors)


# Templates that are broken as published, with the one problem each has (ComfyUI refuses them the same way).
BROKEN_TEMPLATES = {
    # the subgraph's VIDEO output points at link 265, which the file does not contain
    "video_ltx2_i2v_lora.json": ["75 SaveVideo: required input video missing"],
}


def test_workflow_templates_convert_and_validate(server, object_info):
    files = template_files()
    if not files:
        pytest.skip("comfyui-workflow-templates-json is not installed")
    counts = {"templates": 0, "converted": 0, "all_nodes_installed": 0, "validated": 0, "partially_checked": 0,
              "installed_nodes_checked": 0}
    failures: list[str] = []
    mismatches: list[str] = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            workflow = json.load(f)
        if not isinstance(workflow, dict) or "nodes" not in workflow:
            continue
        counts["templates"] += 1
        name = os.path.basename(path)
        r = server.post("/api/workflows/convert", json={"workflow": workflow}, headers=USER)
        if r.status_code != 200:
            failures.append(f"{name}: conversion answered {r.status_code} {r.text[:200]}")
            continue
        counts["converted"] += 1
        out = r.json()
        problems = structural_problems(out["prompt"], object_info, mismatches)
        if out["missing_nodes"]:
            # A value can come from a node that is not installed (a promoted widget's owner):
            # only templates whose nodes are all installed must be complete.
            problems = [p for p in problems if "required input" not in p]
        problems += [w for w in out["warnings"] if "no widget value" in w]
        if name in BROKEN_TEMPLATES:
            if problems != BROKEN_TEMPLATES[name]:
                failures.append(f"{name}: known broken with {BROKEN_TEMPLATES[name]}, now {problems[:3]}")
            continue
        if problems:
            failures.append(f"{name}: {problems[:3]}")
            continue
        counts["installed_nodes_checked"] += sum(1 for e in out["prompt"].values() if e["class_type"] in object_info)
        if out["missing_nodes"]:
            counts["partially_checked"] += 1
            continue
        counts["all_nodes_installed"] += 1
        v = server.post("/api/prompt", json={"prompt": out["prompt"]}, headers=USER)
        if v.status_code == 200:
            server.post("/api/queue", json={"delete": [v.json()["prompt_id"]]}, headers=USER)
            server.post("/api/interrupt", headers=USER)
            counts["validated"] += 1
        elif only_missing_files(v.json()):
            counts["validated"] += 1
        else:
            failures.append(f"{name}: validation {v.text[:3000]}")
    print("workflow templates:", counts, "node definition differences:", len(mismatches))
    assert not failures, "\n".join(failures[:20])
    assert counts["converted"] == counts["templates"] > 600
    assert counts["validated"] == counts["all_nodes_installed"]
