"""Conditioning on disk: Save Conditioning and Load Conditioning (ComfyUI's safetensors layout).

A file holds the entry's tensor as ``conditioning``, every tensor option under
its own key, list-of-tensor options as ``<key>.0``, ``<key>.1``, ... and the
plain (bool, number, string) options as JSON in the ``conditioning_options``
metadata. Saved files go to the output folder; loading reads the embeddings
folder, so a precomputed prompt (Marigold's, for instance) can stand in for the
text encoder.
"""

from __future__ import annotations

import json
from typing import Any

from comfy_kernel.nodes import io

from . import context
from .common import NodeDef
from .save import next_counter, reserve, split_prefix

OPTIONS_KEY = "conditioning_options"


def conditioning_file(conditioning: list) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) of a one-entry CONDITIONING; options that are neither tensors nor plain values fail."""
    import torch

    if len(conditioning) != 1:
        raise ValueError("Save Conditioning takes a single conditioning entry; save it before combining.")
    tensor, options = conditioning[0]
    tensors, values = {"conditioning": tensor}, {}
    for key, value in options.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in value):
            tensors.update({f"{key}.{i}": t for i, t in enumerate(value)})
        elif isinstance(value, (bool, int, float, str)):
            values[key] = value
        elif value is not None:
            raise ValueError(f"Conditioning option '{key}' ({type(value).__name__}) can't be saved.")
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return tensors, {OPTIONS_KEY: json.dumps(values)}


def read_conditioning(path: str) -> list:
    """The CONDITIONING of a file: numbered keys become lists again (in index order), others options."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        metadata = f.metadata() or {}
    if "conditioning" not in tensors:
        raise ValueError(f"{path} has no 'conditioning' tensor")
    tensor = tensors.pop("conditioning")
    options = json.loads(metadata.get(OPTIONS_KEY, "{}"))
    lists: dict[str, dict[int, Any]] = {}
    for key, value in tensors.items():
        name, _, index = key.rpartition(".")
        if index.isdigit():
            lists.setdefault(name, {})[int(index)] = value
        else:
            options[key] = value
    options.update({k: [v[i] for i in sorted(v)] for k, v in lists.items()})
    return [[tensor, options]]


class ConditioningLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ConditioningLoader", display_name="Load Conditioning", category="model/loaders",
            description="A conditioning saved by Save Conditioning (or any safetensors file with a 'conditioning' "
                        "tensor) from the embeddings folder.",
            inputs=[io.Combo.Input("conditioning_name", options=context.list_files("embeddings"))],
            outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, conditioning_name: str) -> io.NodeOutput:
        return io.NodeOutput(read_conditioning(context.full_path("embeddings", conditioning_name)))


class SaveConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveConditioning", display_name="Save Conditioning", category="model/conditioning",
            search_aliases=["save conditioning", "export conditioning", "cache text encoder output"],
            description="Writes a conditioning to the output folder as safetensors; moved to models/embeddings, "
                        "Load Conditioning reads it back without running the text encoder.",
            is_output_node=True,
            inputs=[io.Conditioning.Input("conditioning"),
                    io.String.Input("filename_prefix", default="conditioning/ComfyUI")],
            outputs=[io.Conditioning.Output(display_name="conditioning")])

    @classmethod
    def execute(cls, conditioning: list, filename_prefix: str) -> io.NodeOutput:
        from safetensors.torch import save

        tensors, metadata = conditioning_file(conditioning)
        folder, filename, _ = split_prefix(filename_prefix, context.output_dir(), 0, 0)
        data = save(tensors, metadata=metadata)
        handle, _, _ = reserve(folder, filename, next_counter(folder, filename), ext="safetensors")
        with handle:
            handle.write(data)
        return io.NodeOutput(conditioning)


NODES = [
    NodeDef("ConditioningLoader", ConditioningLoader, "Load Conditioning", "comfy_extras.nodes_cond"),
    NodeDef("SaveConditioning", SaveConditioning, "Save Conditioning", "comfy_extras.nodes_cond"),
]
