"""Black Forest Labs' control LoRAs for Flux.1 dev (depth, canny): LoRA deltas that also widen ``img_in``.

Their keys are the model's own names without a prefix: ``img_in.lora_A`` reads
128 input features where the model has 64 (the latent and, concatenated, the
control image's latent, both patchified), so the patched ``img_in`` weight is
zero-padded to the LoRA's shape first (``reshape_weight``). ``lora_B.bias``
is a bias difference, and the q/k norm scales are stored whole (set, not
added). The model then reads its input width from the patched weight (see
FluxModel.concat_cond).
"""

from __future__ import annotations

import torch


def is_bfl_control_lora(sd: dict[str, torch.Tensor]) -> bool:
    return "img_in.lora_A.weight" in sd and "single_blocks.0.norm.key_norm.scale" in sd


def bfl_control_lora(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's keys under the names the LoRA loader reads (``diffusion_model.`` keys)."""
    out = {}
    for key, tensor in sd.items():
        name = key.replace(".lora_B.bias", ".diff_b").replace("_norm.scale", "_norm.scale.set_weight")
        out["diffusion_model." + name] = tensor
    out["diffusion_model.img_in.reshape_weight"] = torch.tensor(
        [sd["img_in.lora_B.weight"].shape[0], sd["img_in.lora_A.weight"].shape[1]])
    return out
