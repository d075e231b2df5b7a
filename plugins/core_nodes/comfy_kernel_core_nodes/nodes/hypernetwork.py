"""HypernetworkLoader (comfy_extras.nodes_hypernetwork) and LoraModelLoader (comfy_extras.nodes_train).

A hypernetwork file (the ``.pt`` format of the A1111 web UI) holds, per
attention context width, two small MLPs that add a learned correction to the
keys and values of every attention layer of that width:
``k + mlp_k(k) * strength`` and ``v + mlp_v(v) * strength``, applied as the
model's ``attn1_patch`` and ``attn2_patch``. Dropout layers are left out: a
loaded hypernetwork is used for inference only, so the output is deterministic.
"""

from __future__ import annotations

import logging
from typing import Any

from . import context
from .common import NodeDef

log = logging.getLogger(__name__)

ACTIVATIONS = ("linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "softsign", "mish")


def _activation(name: str) -> Any:
    import torch

    return {"relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU, "swish": torch.nn.Hardswish,
            "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "softsign": torch.nn.Softsign,
            "mish": torch.nn.Mish}[name]()


def _mlp(weights: dict[str, Any], activation: str, layer_norm: bool, activate_output: bool) -> Any:
    """One of a hypernetwork's MLPs: linears (each followed by a layer norm when the file says so)."""
    import torch

    names = [k[:-len(".weight")] for k in weights if k.endswith(".weight")]
    layers: list[Any] = []
    i = 0
    while i < len(names):
        last = i == len(names) - 1  # as ComfyUI counts it: with layer norms, never true for a linear
        weight, bias = weights[f"{names[i]}.weight"], weights[f"{names[i]}.bias"]
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers.append(linear)
        if activation != "linear" and (not last or activate_output):
            layers.append(_activation(activation))
        if layer_norm:
            i += 1
            ln_weight, ln_bias = weights[f"{names[i]}.weight"], weights[f"{names[i]}.bias"]
            norm = torch.nn.LayerNorm(ln_weight.shape[0])
            norm.load_state_dict({"weight": ln_weight, "bias": ln_bias})
            layers.append(norm)
        i += 1
    return torch.nn.Sequential(*layers).eval().requires_grad_(False)


class HypernetworkPatch:
    """The attention patch: ``(q, k, v, extra_options) -> (q, k', v')`` for the widths the file covers."""

    def __init__(self, networks: dict[int, Any], strength: float) -> None:
        self.networks = networks
        self.strength = strength

    def __call__(self, q: Any, k: Any, v: Any, extra_options: dict) -> tuple[Any, Any, Any]:
        pair = self.networks.get(k.shape[-1])
        if pair is None:
            return q, k, v
        return q, k + self._run(pair[0], k) * self.strength, v + self._run(pair[1], v) * self.strength

    @staticmethod
    def _run(mlp: Any, x: Any) -> Any:
        first = next(mlp.parameters())
        if first.device != x.device:
            mlp.to(x.device)
        return mlp(x.to(first.dtype)).to(x.dtype)

    def to(self, device: Any) -> HypernetworkPatch:
        for pair in self.networks.values():
            pair.to(device)
        return self


def load_hypernetwork_patch(path: str, strength: float) -> HypernetworkPatch | None:
    """The patch of a hypernetwork file, or None (logged) when its activation is not one ComfyUI knows."""
    import torch

    from ..model.files import is_safetensors

    if is_safetensors(path):
        from safetensors.torch import load_file

        sd: dict[Any, Any] = load_file(path, device="cpu")
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    activation = sd.get("activation_func", "linear")
    layer_norm = bool(sd.get("is_layer_norm", False))
    activate_output = bool(sd.get("activate_output", False))
    if activation not in ACTIVATIONS:
        log.error("Unsupported hypernetwork %s: activation %r", path, activation)
        return None
    networks = {}
    for key, value in sd.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            continue
        networks[width] = torch.nn.ModuleList([_mlp(value[i], activation, layer_norm, activate_output)
                                               for i in (0, 1)])
    return HypernetworkPatch(networks, strength)


class HypernetworkLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_hypernetwork"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "hypernetwork_name": (context.list_files("hypernetworks"),),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})}}

    def load_hypernetwork(self, model: Any, hypernetwork_name: str, strength: float) -> tuple[Any]:
        patched = model.clone()
        patch = load_hypernetwork_patch(context.full_path("hypernetworks", hypernetwork_name), strength)
        if patch is not None:
            patched.set_model_attn1_patch(patch)
            patched.set_model_attn2_patch(patch)
        return (patched,)


class LoraModelLoader:
    """Applies a LoRA given as tensors (LORA_MODEL, as ComfyUI's training nodes output it) to a model."""

    CATEGORY = "loaders"
    DESCRIPTION = "Load Trained LoRA weights from Train LoRA node."
    EXPERIMENTAL = True
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The modified diffusion model.",)
    FUNCTION = "load_lora_model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
            "lora": ("LORA_MODEL", {"tooltip": "The LoRA model to apply to the diffusion model."}),
            "strength_model": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01,
                                         "tooltip": "How strongly to modify the diffusion model."}),
        }}

    def load_lora_model(self, model: Any, lora: dict[str, Any], strength_model: float) -> tuple[Any]:
        from ..model.lora import load_lora_for_models

        if strength_model == 0:
            return (model,)
        return (load_lora_for_models(model, None, lora, strength_model, 0)[0],)


NODES = [
    NodeDef("HypernetworkLoader", HypernetworkLoader, "HypernetworkLoader", "comfy_extras.nodes_hypernetwork"),
    NodeDef("LoraModelLoader", LoraModelLoader, "Load LoRA Model", "comfy_extras.nodes_train"),
]
