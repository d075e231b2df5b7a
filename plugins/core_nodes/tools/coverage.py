"""How much of ComfyUI's node set and of the frontend's workflow templates the core nodes cover.

``python plugins/core_nodes/tools/coverage.py`` prints the figures and rewrites
the generated node table in plugins/core_nodes/README.md (between its
``<!-- node table -->`` markers); ``--check`` exits 1 when the README is out of
date (the tests run it). Templates come from the installed
``comfyui-workflow-templates-json`` package (the frontend's dependency); the
"local" templates are those of its index that are not paid API workflows.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1]
DATA = PLUGIN / "tests" / "data"
README = PLUGIN / "README.md"
BEGIN, END = "<!-- node table -->", "<!-- end of node table -->"

#: Types the frontend handles itself; they never reach the server.
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode", "Label", "GroupNode"}

#: Why a ComfyUI module's nodes are not here (yet). Anything not listed and not done is "not yet".
WHY = {
    "comfy_extras.nodes_train": ("never", "training LoRAs is outside an inference server's job"),
    "comfy_extras.nodes_load_3d": ("not yet", "3D viewer nodes: the frontend's 3D widgets and the 3D families"),
    "comfy_extras.nodes_hunyuan3d": ("not yet", "Hunyuan3D family (3D generation)"),
    "comfy_extras.nodes_stable3d": ("not yet", "Stable Zero123 / SV3D families"),
    "comfy_extras.nodes_stable_cascade": ("not yet", "Stable Cascade family"),
    "comfy_extras.nodes_cosmos": ("not yet", "Cosmos family"),
    "comfy_extras.nodes_mochi": ("not yet", "Mochi family"),
    "comfy_extras.nodes_pixart": ("not yet", "PixArt family"),
    "comfy_extras.nodes_photomaker": ("not yet", "PhotoMaker"),
    "comfy_extras.nodes_wan": ("not yet", "Wan variants not here yet (Animate, Phantom)"),
    "comfy_extras.nodes_lt": ("not yet", "LTX-2.3 additions (the sampling, guide, latent and scheduler nodes "
                                         "LTX-2 and LTX-Video 0.9 use are here)"),
    "comfy_extras.nodes_lt_audio": ("not yet", "LTX-2 audio nodes (the audio VAE nodes are here)"),
    "comfy_extras.nodes_hunyuan": ("not yet", "HunyuanVideo 1.0 and Hunyuan image families (HunyuanVideo 1.5 is here)"),
    "comfy_extras.nodes_chroma_radiance": ("not yet", "Chroma Radiance family (pixel-space Chroma)"),
    "comfy_extras.nodes_video_model": ("not yet", "Stable Video Diffusion family"),
}


#: Why single nodes of an otherwise covered module are not here.
WHY_NODE = {
    # newer than 0.3.64, used by the local templates, without a contract here yet
    "BlockSparseAttention": ("not yet", "block-sparse (VSA) attention kernels for long video token sequences; "
                             "its templates are MiniMax H3 ones, whose family is not here"),
    "ReferenceMultiLatent": ("not yet", "part of the FLUX 3 Klein family (its templates also need Flux3LayoutPrompt and "
                             "the FLUX 3 model, neither here); ComfyUI's definition is in no source available to "
                             "match its contract against"),
    "BuildPoseFile": ("not yet", "SAM 3D Body pose data to animated GLB/BVH files (3D family)"),
    "GenerateTracks": ("not yet", "motion tracks for Wan-Move's track conditioning (Wan variants)"),
}

#: ComfyUI modules of the nodes above that have no contract here (the table's module column).
NODE_MODULES = {
    "BlockSparseAttention": "comfy_extras.nodes_sparse_attention",
    "GenerateTracks": "comfy_extras.nodes_wanmove",
}


def reference_listed() -> dict:
    """ComfyUI 0.3.64's own /object_info (local nodes)."""
    return json.loads((DATA / "comfyui-0.3.64-object_info.local.json").read_text())


def reference() -> dict:
    """0.3.64's local nodes: its /object_info plus the modules it failed to import there (nodes_audio)."""
    out = reference_listed()
    for path in sorted(DATA.glob("comfyui-0.3.64-nodes_*.json")):
        out.update(json.loads(path.read_text()))
    return out


def newer() -> dict:
    out: dict = {}
    for path in sorted((DATA / "newer").glob("*.json")):
        out.update(json.loads(path.read_text()))
    return out


def registered() -> set[str]:
    from comfy_kernel_core_nodes.nodes import NODES

    return {n.name for n in NODES}


def template_types(workflow: dict) -> set[str]:
    """Node types a UI-format workflow uses, subgraph contents included, subgraph instances and notes excluded."""
    definitions = workflow.get("definitions") or {}
    subgraphs = {s["id"]: s for s in (definitions.get("subgraphs") or [])} if isinstance(definitions, dict) else {}
    found: set[str] = set()
    for nodes in [workflow.get("nodes", [])] + [s.get("nodes", []) for s in subgraphs.values()]:
        found |= {n.get("type") for n in nodes if n.get("type") not in subgraphs}
    return found - FRONTEND_ONLY - {None}


def local_templates() -> dict[str, set[str]]:
    """Each local template's node types."""
    import comfyui_workflow_templates_json as package

    folder = Path(package.__file__).parent / "templates"
    index = json.loads((folder / "index.json").read_text())
    names = sorted({t["name"] for category in index for t in category.get("templates", [])
                    if not t["name"].startswith("api_")})
    return {name: template_types(json.loads((folder / f"{name}.json").read_text())) for name in names
            if (folder / f"{name}.json").is_file()}


def figures() -> dict:
    ours, ref = registered(), reference()
    templates = local_templates()
    runnable = [name for name, types in templates.items() if types <= ours]
    return {"reference_nodes": len(ref), "reference_listed": len(reference_listed()),
            "reference_done": len(ours & set(ref)), "registered": len(ours),
            "templates": len(templates), "templates_runnable": len(runnable)}


def table() -> str:
    ours, ref, new = registered(), reference(), newer()
    rows = ["| node | ComfyUI module | status |", "| --- | --- | --- |"]
    for name in sorted(set(ref) | set(new) | ours | set(WHY_NODE), key=str.lower):
        module = (ref.get(name) or new.get(name) or {}).get("python_module", NODE_MODULES.get(name, ""))
        if name in ours:
            status = "done"
        else:
            kind, why = WHY_NODE.get(name) or WHY.get(module, ("not yet", ""))
            status = f"{kind}: {why}" if why else kind
        rows.append(f"| {name} | {module} | {status} |")
    f = figures()
    head = (f"{f['reference_done']} of ComfyUI 0.3.64's {f['reference_nodes']} local nodes ({f['reference_listed']} "
            f"in its /object_info, plus the nodes_audio module it could not import without torchaudio) are here "
            f"with its exact contract ({f['registered']} core nodes in all, newer ones included); "
            f"{f['templates_runnable']} of the {f['templates']} local workflow templates use only nodes that are here.")
    return "\n".join([head, "", *rows])


def rewrite(check: bool) -> int:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    updated = text[:start] + "\n" + table() + "\n" + text[end:]
    if check:
        if updated == text:
            return 0
        diff = difflib.unified_diff(text.splitlines(), updated.splitlines(), "README.md", "generated", lineterm="")
        print("\n".join(diff), file=sys.stderr)
        return 1
    README.write_text(updated)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the README's node table is out of date")
    args = parser.parse_args()
    if not args.check:
        print(json.dumps(figures(), indent=1))
    return rewrite(args.check)


if __name__ == "__main__":
    sys.exit(main())
