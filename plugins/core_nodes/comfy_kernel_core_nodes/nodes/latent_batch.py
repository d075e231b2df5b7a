"""LATENT batching: LatentBatch, LatentBatchSeedBehavior and RebatchLatents.

``batch_index`` says which item of an original batch each row is, so the
samplers give every row the noise it had there; these nodes keep or rewrite
it as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef
from .latent_ops import reshape_latent_to

Latent = dict[str, Any]


class LatentBatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentBatch", category="latent/batch",
                         inputs=[io.Latent.Input("samples1"), io.Latent.Input("samples2")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples1: Latent, samples2: Latent) -> io.NodeOutput:
        import torch

        s1 = samples1["samples"]
        s2 = reshape_latent_to(s1.shape, samples2["samples"], repeat_batch=False)
        out = samples1.copy()
        out["samples"] = torch.cat((s1, s2), dim=0)
        out["batch_index"] = (list(samples1.get("batch_index", range(s1.shape[0])))
                              + list(samples2.get("batch_index", range(s2.shape[0]))))
        return io.NodeOutput(out)


class LatentBatchSeedBehavior(io.ComfyNode):
    """``fixed``: every row gets the first row's noise; ``random``: each row its own (drops batch_index)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LatentBatchSeedBehavior", category="latent/advanced",
                         inputs=[io.Latent.Input("samples"),
                                 io.Combo.Input("seed_behavior", options=["random", "fixed"], default="fixed")],
                         outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, samples: Latent, seed_behavior: str) -> io.NodeOutput:
        out = samples.copy()
        if seed_behavior == "random":
            out.pop("batch_index", None)
        elif seed_behavior == "fixed":
            first = out.get("batch_index", [0])[0]
            out["batch_index"] = [first] * samples["samples"].shape[0]
        return io.NodeOutput(out)


def _entry(latent: Latent, offset: int) -> tuple[Any, Any, list[int]]:
    """(samples, noise mask, batch indices) of one input latent; the mask defaults to all ones."""
    import torch

    samples = latent["samples"]
    b, _, h, w = samples.shape[:4]
    mask = latent.get("noise_mask")
    if mask is None:
        mask = torch.ones((b, 1, h * 8, w * 8), device="cpu")
    if mask.shape[0] < b:
        mask = mask.repeat((b - 1) // mask.shape[0] + 1, 1, 1, 1)[:b]
    indices = list(latent["batch_index"]) if "batch_index" in latent else [offset + i for i in range(b)]
    return samples, mask, indices


def _join(a: tuple, b: tuple) -> tuple:
    import torch

    return (torch.cat((a[0], b[0])), torch.cat((a[1], b[1])), a[2] + b[2])


def _take(batch: tuple, start: int, stop: int | None) -> Latent:
    return {"samples": batch[0][start:stop], "noise_mask": batch[1][start:stop], "batch_index": batch[2][start:stop]}


class RebatchLatents(io.ComfyNode):
    """Regroups a list of latent batches into batches of ``batch_size`` (a latent list output).

    Batches of another spatial size start a new group; a noise mask that is all
    ones is dropped from the result.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="RebatchLatents", display_name="Rebatch Latents", category="latent/batch",
                         is_input_list=True,
                         inputs=[io.Latent.Input("latents"), io.Int.Input("batch_size", default=1, min=1, max=4096)],
                         outputs=[io.Latent.Output(is_output_list=True)])

    @classmethod
    def execute(cls, latents: list[Latent], batch_size: list[int]) -> io.NodeOutput:
        size = batch_size[0]
        out: list[Latent] = []
        current: tuple | None = None
        seen = 0
        for latent in latents:
            entry = _entry(latent, seen)
            seen += len(entry[2])
            if current is None:
                current = entry
            elif entry[0].shape[-2:] != current[0].shape[-2:]:
                out.append(_take(current, 0, size))
                current = entry
            else:
                current = _join(current, entry)
            if current[0].shape[0] > size:
                full = current[0].shape[0] // size
                out.extend(_take(current, i * size, (i + 1) * size) for i in range(full))
                current = (current[0][full * size:], current[1][full * size:], current[2][full * size:])
                if current[0].shape[0] == 0:
                    current = None
        if current is not None:
            out.append(_take(current, 0, size))
        for item in out:
            if item["noise_mask"].mean() == 1.0:
                del item["noise_mask"]
        return io.NodeOutput(out)


NODES = [
    NodeDef("LatentBatch", LatentBatch, None, "comfy_extras.nodes_latent"),
    NodeDef("LatentBatchSeedBehavior", LatentBatchSeedBehavior, None, "comfy_extras.nodes_latent"),
    NodeDef("RebatchLatents", RebatchLatents, "Rebatch Latents", "comfy_extras.nodes_rebatch"),
]
