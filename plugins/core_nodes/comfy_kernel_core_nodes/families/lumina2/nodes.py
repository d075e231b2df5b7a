"""Lumina 2's nodes (ComfyUI's comfy_extras.nodes_lumina2): its system-prompted text encode and RenormCFG."""

from __future__ import annotations

from typing import Any

from comfy_kernel.nodes import io

from ...nodes.common import NodeDef

MODULE = "comfy_extras.nodes_lumina2"

SYSTEM_PROMPT = {
    "superior": "You are an assistant designed to generate superior images with the superior degree of image-text "
                "alignment based on textual prompts or user prompts.",
    "alignment": "You are an assistant designed to generate high-quality images with the highest degree of "
                 "image-text alignment based on textual prompts.",
}


class CLIPTextEncodeLumina2(io.ComfyNode):
    """The user prompt after one of Lumina 2's two system prompts and its ``<Prompt Start>`` marker."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CLIPTextEncodeLumina2", display_name="CLIP Text Encode for Lumina2", category="conditioning",
            description="Encodes a system prompt and a user prompt with the text encoder into the conditioning "
                        "that guides the diffusion model.",
            inputs=[
                io.Combo.Input("system_prompt", options=list(SYSTEM_PROMPT),
                               tooltip="Which of Lumina 2's system prompts goes before the user prompt."),
                io.String.Input("user_prompt", multiline=True, dynamic_prompts=True, tooltip="The text to encode."),
                io.Clip.Input("clip", tooltip="The text encoder."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The encoded prompt.")])

    @classmethod
    def execute(cls, clip, user_prompt, system_prompt) -> io.NodeOutput:
        if clip is None:
            raise RuntimeError("clip input is invalid: None (the checkpoint may hold no text encoder)")
        prompt = f"{SYSTEM_PROMPT[system_prompt]} <Prompt Start> {user_prompt}"
        return io.NodeOutput(clip.encode_from_tokens_scheduled(clip.tokenize(prompt)))


class RenormCFG(io.ComfyNode):
    """CFG whose result is rescaled so its norm stays within ``renorm_cfg`` times the conditional prediction's,
    applied while sigma is below ``cfg_trunc`` (conditional prediction alone above it)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="RenormCFG", category="advanced/model", inputs=[
            io.Model.Input("model"),
            io.Float.Input("cfg_trunc", default=100, min=0.0, max=100.0, step=0.01),
            io.Float.Input("renorm_cfg", default=1.0, min=0.0, max=100.0, step=0.01),
        ], outputs=[io.Model.Output()])

    @classmethod
    def execute(cls, model, cfg_trunc, renorm_cfg) -> io.NodeOutput:
        import torch

        def channels(args: dict[str, Any]) -> int:
            bound = args.get("model")
            net = getattr(bound, "_module", None) if bound is not None else None
            if net is not None and hasattr(net, "in_channels"):
                return int(net.in_channels)
            return int(model.model.latent_format.latent_channels)

        def renorm(args: dict[str, Any]) -> Any:
            cond, uncond = args["cond_denoised"], args["uncond_denoised"]
            scale, sigma, x = args["cond_scale"], args["timestep"], args["input"]
            n = channels(args)
            cond_eps, uncond_eps, rest = cond[:, :n], uncond[:, :n], cond[:, n:]
            if sigma[0] < cfg_trunc:
                eps = uncond_eps + scale * (cond_eps - uncond_eps)
                if float(renorm_cfg) > 0.0:
                    dims = tuple(range(1, cond_eps.ndim))
                    limit = torch.linalg.vector_norm(cond_eps, dim=dims, keepdim=True) * float(renorm_cfg)
                    norm = torch.linalg.vector_norm(eps, dim=dims, keepdim=True)
                    eps = torch.where(norm >= limit, eps * (limit / norm), eps)  # per item (ComfyUI: batch of 1)
            else:
                eps = cond_eps
            return x - torch.cat([eps, rest], dim=1)

        patched = model.clone()
        patched.set_model_sampler_cfg_function(renorm)
        return io.NodeOutput(patched)


NODES = [
    NodeDef("CLIPTextEncodeLumina2", CLIPTextEncodeLumina2, "CLIP Text Encode for Lumina2", MODULE),
    NodeDef("RenormCFG", RenormCFG, None, MODULE),
]
