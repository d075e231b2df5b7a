"""LoraSave: a LoRA extracted from a model difference (ModelMergeSubtract / CLIPMergeSubtract output).

Each weight difference is factored by SVD to the requested rank (convolutions
flattened, 1x1 ones squeezed), the singular values folded into ``lora_up``,
and both factors clamped to the 99th percentile of their magnitudes, as
ComfyUI does; ``full_diff`` keeps the differences whole. Unchanged weights
(a zero difference) give zero factors without a decomposition, and the
decomposition is the reduced one: ComfyUI's full SVD of the token embedding
(49408 x 49408 factors) needs about 10 GB for the same leading factors. Keys are the model
keys (``diffusion_model.*``, ``text_encoders.*``), which LoRA loaders map back.
"""

from __future__ import annotations

import logging
from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

log = logging.getLogger(__name__)

CLAMP_QUANTILE = 0.99
LORA_TYPES = ("standard", "full_diff")


def extract_lora(diff: Any, rank: int) -> tuple[Any, Any]:
    """(up, down) with up @ down ~ diff, rank at most ``rank``."""
    import torch

    conv2d = diff.ndim == 4
    kernel_size = None if not conv2d else diff.size()[2:4]
    conv2d_3x3 = conv2d and kernel_size != (1, 1)
    out_dim, in_dim = diff.size()[0:2]
    rank = min(rank, in_dim, out_dim)
    if conv2d:
        diff = diff.flatten(start_dim=1) if conv2d_3x3 else diff.squeeze()
    diff = diff.float()
    if not torch.any(diff):
        u, vh = diff.new_zeros(out_dim, rank), diff.new_zeros(rank, diff.shape[1])
    else:
        # the reduced SVD has the same leading factors as the full one, without its out x out matrix
        u, s, vh = torch.linalg.svd(diff, full_matrices=False)
        u, vh = u[:, :rank] @ torch.diag(s[:rank]), vh[:rank, :]
        dist = torch.cat([u.flatten(), vh.flatten()])
        hi_val = torch.quantile(dist, CLAMP_QUANTILE)
        u, vh = u.clamp(-hi_val, hi_val), vh.clamp(-hi_val, hi_val)
    if conv2d:
        u = u.reshape(out_dim, rank, 1, 1)
        vh = vh.reshape(rank, in_dim, kernel_size[0], kernel_size[1])
    return u, vh


def calc_lora_model(model_diff: Any, rank: int, prefix_model: str, prefix_lora: str, output_sd: dict,
                    lora_type: str, bias_diff: bool = False) -> dict:
    sd = model_diff.model_state_dict(filter_prefix=prefix_model)
    for key, tensor in sd.items():
        name = key[len(prefix_model):]
        if key.endswith(".weight"):
            base = f"{prefix_lora}{name[:-len('.weight')]}"
            if lora_type == "standard":
                if tensor.ndim < 2:
                    if bias_diff:
                        output_sd[f"{base}.diff"] = tensor.contiguous().half().cpu()
                    continue
                try:
                    up, down = extract_lora(tensor, rank)
                except Exception:
                    log.warning("Could not generate lora weights for key %s, is the weight difference a zero?", key)
                    continue
                output_sd[f"{base}.lora_up.weight"] = up.contiguous().half().cpu()
                output_sd[f"{base}.lora_down.weight"] = down.contiguous().half().cpu()
            else:
                output_sd[f"{base}.diff"] = tensor.contiguous().half().cpu()
        elif bias_diff and key.endswith(".bias"):
            output_sd[f"{prefix_lora}{name[:-len('.bias')]}.diff_b"] = tensor.contiguous().half().cpu()
    return output_sd


class LoraSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="LoraSave", display_name="Extract and Save Lora", category="_for_testing", inputs=[
            io.String.Input("filename_prefix", default="loras/ComfyUI_extracted_lora"),
            io.Int.Input("rank", default=8, min=1, max=4096, step=1),
            io.Combo.Input("lora_type", options=LORA_TYPES),
            io.Boolean.Input("bias_diff", default=True),
            io.Model.Input("model_diff", optional=True, tooltip="A ModelMergeSubtract output to turn into a LoRA."),
            io.Clip.Input("text_encoder_diff", optional=True,
                          tooltip="A CLIPMergeSubtract output to turn into a LoRA."),
        ], is_experimental=True, is_output_node=True)

    @classmethod
    def execute(cls, filename_prefix, rank, lora_type, bias_diff, model_diff=None,
                text_encoder_diff=None) -> io.NodeOutput:
        from ..model.saving import save_file
        from .model_merging import _reserve

        if model_diff is None and text_encoder_diff is None:
            return io.NodeOutput()
        output_sd: dict = {}
        if model_diff is not None:
            calc_lora_model(model_diff, rank, "diffusion_model.", "diffusion_model.", output_sd, lora_type, bias_diff)
        if text_encoder_diff is not None:
            calc_lora_model(text_encoder_diff.patcher, rank, "", "text_encoders.", output_sd, lora_type, bias_diff)
        path, _, _ = _reserve(filename_prefix)
        save_file(output_sd, path, None)
        return io.NodeOutput()


NODES = [NodeDef("LoraSave", LoraSave, "Extract and Save Lora", "comfy_extras.nodes_lora_extract")]
