"""LoRA files -> weight patches (ComfyUI's ``comfy.lora`` key maps and loader).

A LoRA file names the layers it changes in one of several conventions
(kohya ``lora_unet_input_blocks_1_1_proj_in``, diffusers
``down_blocks.0.attentions.0.proj_in``, PEFT ``lora_A/lora_B``, plain model
keys, LyCORIS LoHa/LoKr, DoRA scales, full ``diff`` tensors). A *key map*
translates every name a model's layers can have into its model keys; the
loader turns each recognised layer into a patch for :meth:`ModelPatcher.add_patches`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .patcher import KeyedPatches
from .weights import LoHaAdapter, LoKrAdapter, LoRAAdapter, WeightAdapter

log = logging.getLogger(__name__)

LORA_CLIP_MAP = {
    "mlp.fc1": "mlp_fc1", "mlp.fc2": "mlp_fc2", "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.q_proj": "self_attn_q_proj", "self_attn.v_proj": "self_attn_v_proj",
    "self_attn.out_proj": "self_attn_out_proj",
}

_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
           "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def _resnet_keys(ldm: str, diffusers: str, keys: set[str], out: dict[str, str]) -> None:
    for ldm_part, diff_part in _RESNET.items():
        for suffix in (".weight", ".bias"):
            if f"{ldm}.{ldm_part}{suffix}" in keys:
                out[f"{diffusers}.{diff_part}{suffix}"] = f"{ldm}.{ldm_part}{suffix}"


def _same_keys(ldm: str, diffusers: str, keys: set[str], out: dict[str, str]) -> None:
    for key in keys:
        if key.startswith(ldm + "."):
            out[diffusers + key[len(ldm):]] = key


def unet_to_diffusers(unet_config: dict[str, Any], keys: set[str] | None = None) -> dict[str, str]:
    """diffusers UNet key -> LDM key, for the layout of ``unet_config`` (keys: the LDM keys present)."""
    keys = keys or set()
    out: dict[str, str] = {}
    levels = len(unet_config["channel_mult"])
    res = unet_config["num_res_blocks"]
    n = 1
    for level in range(levels):
        for j in range(res[level]):
            _resnet_keys(f"input_blocks.{n}.0", f"down_blocks.{level}.resnets.{j}", keys, out)
            _same_keys(f"input_blocks.{n}.1", f"down_blocks.{level}.attentions.{j}", keys, out)
            n += 1
        if level != levels - 1:
            _same_keys(f"input_blocks.{n}.0.op", f"down_blocks.{level}.downsamplers.0.conv", keys, out)
            n += 1
    _resnet_keys("middle_block.0", "mid_block.resnets.0", keys, out)
    _same_keys("middle_block.1", "mid_block.attentions.0", keys, out)
    _resnet_keys("middle_block.2", "mid_block.resnets.1", keys, out)
    n = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(res[level] + 1):
            _resnet_keys(f"output_blocks.{n}.0", f"up_blocks.{i}.resnets.{j}", keys, out)
            _same_keys(f"output_blocks.{n}.1", f"up_blocks.{i}.attentions.{j}", keys, out)
            if level and j == res[level]:
                slot = 2 if f"output_blocks.{n}.1.proj_in.weight" in keys else 1
                _same_keys(f"output_blocks.{n}.{slot}.conv", f"up_blocks.{i}.upsamplers.0.conv", keys, out)
            n += 1
    for ldm, diffusers in (("input_blocks.0.0", "conv_in"), ("time_embed.0", "time_embedding.linear_1"),
                           ("time_embed.2", "time_embedding.linear_2"), ("label_emb.0.0", "add_embedding.linear_1"),
                           ("label_emb.0.2", "add_embedding.linear_2"), ("label_emb.0.0", "class_embedding.linear_1"),
                           ("label_emb.0.2", "class_embedding.linear_2"), ("out.0", "conv_norm_out"),
                           ("out.2", "conv_out")):
        for suffix in (".weight", ".bias"):
            if ldm + suffix in keys:
                out[diffusers + suffix] = ldm + suffix
    return out


def model_lora_keys_unet(model: Any, key_map: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every LoRA name of the diffusion model's layers -> model key."""
    key_map = {} if key_map is None else key_map
    keys = model.state_dict_keys()
    prefix = "diffusion_model."
    for k in keys:
        if not k.startswith(prefix):
            continue
        if k.endswith(".weight"):
            key_map["lora_unet_" + k[len(prefix):-len(".weight")].replace(".", "_")] = k
            key_map[k[:-len(".weight")]] = k
        else:
            key_map[k] = k
    family_keys = getattr(getattr(model, "model_config", None), "lora_keys", None)
    if family_keys is not None:  # a family's own LoRA names (e.g. Flux's diffusers names, slices of fused layers)
        family_keys(set(keys), key_map)
    unet_config = getattr(model, "unet_config", None) or getattr(getattr(model, "model_config", None),
                                                                  "unet_config", None)
    if unet_config and "channel_mult" in unet_config:
        local = {k[len(prefix):] for k in keys if k.startswith(prefix)}
        for diffusers, ldm in unet_to_diffusers(unet_config, local).items():
            if not diffusers.endswith(".weight"):
                continue
            model_key = prefix + ldm
            name = diffusers[:-len(".weight")]
            key_map["lora_unet_" + name.replace(".", "_")] = model_key
            key_map["lycoris_" + name.replace(".", "_")] = model_key
            for p in ("", "unet."):
                dkey = p + name.replace(".to_", ".processor.to_")
                if dkey.endswith(".to_out.0"):
                    dkey = dkey[:-2]
                key_map[dkey] = model_key
    return key_map


def model_lora_keys_clip(model: Any, key_map: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every LoRA name of the text encoders' layers -> model key."""
    key_map = {} if key_map is None else key_map
    keys = model.state_dict_keys()
    for k in keys:
        if k.endswith(".weight"):
            key_map["text_encoders." + k[:-len(".weight")]] = k
    clip_l_present = False
    for b in range(32):
        for c, name in LORA_CLIP_MAP.items():
            for encoder in ("clip_h", "clip_l"):
                k = f"{encoder}.transformer.text_model.encoder.layers.{b}.{c}.weight"
                if k in keys:
                    key_map[f"lora_te_text_model_encoder_layers_{b}_{name}"] = k
                    key_map[f"lora_te1_text_model_encoder_layers_{b}_{name}"] = k
                    key_map[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = k
                    clip_l_present = True
            k = f"clip_g.transformer.text_model.encoder.layers.{b}.{c}.weight"
            if k in keys:
                if clip_l_present:
                    key_map[f"lora_te2_text_model_encoder_layers_{b}_{name}"] = k
                    key_map[f"text_encoder_2.text_model.encoder.layers.{b}.{c}"] = k
                else:
                    key_map[f"lora_te_text_model_encoder_layers_{b}_{name}"] = k
                    key_map[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = k
                    key_map[f"lora_prior_te_text_model_encoder_layers_{b}_{name}"] = k
    return key_map


def _lora_pair(x: str, lora: dict[str, torch.Tensor]) -> tuple[str, str, str | None] | None:
    for up, down, mid in ((f"{x}.lora_up.weight", f"{x}.lora_down.weight", f"{x}.lora_mid.weight"),
                          (f"{x}_lora.up.weight", f"{x}_lora.down.weight", None),
                          (f"{x}.lora_B.weight", f"{x}.lora_A.weight", None),
                          (f"{x}.lora.up.weight", f"{x}.lora.down.weight", None),
                          (f"{x}.lora_B", f"{x}.lora_A", None),
                          (f"{x}.lora_linear_layer.up.weight", f"{x}.lora_linear_layer.down.weight", None),
                          (f"{x}.lora_B.default.weight", f"{x}.lora_A.default.weight", None)):
        if up in lora:
            return up, down, mid
    return None


def _adapter(x: str, lora: dict[str, torch.Tensor], alpha: float | None, dora: Any,
             used: set[str]) -> WeightAdapter | None:
    pair = _lora_pair(x, lora)
    if pair is not None:
        up, down, mid = pair
        names = {up, down}
        mid_t = lora.get(mid) if mid else None
        if mid_t is not None:
            names.add(mid)
        reshape = None
        if f"{x}.reshape_weight" in lora:
            reshape = lora[f"{x}.reshape_weight"].tolist()
            names.add(f"{x}.reshape_weight")
        used |= names
        return LoRAAdapter(names, (lora[up], lora[down], alpha, mid_t, dora, reshape))
    if f"{x}.hada_w1_a" in lora:
        names = {f"{x}.hada_w1_a", f"{x}.hada_w1_b", f"{x}.hada_w2_a", f"{x}.hada_w2_b"}
        t1, t2 = lora.get(f"{x}.hada_t1"), lora.get(f"{x}.hada_t2")
        if t1 is not None:
            names |= {f"{x}.hada_t1", f"{x}.hada_t2"}
        used |= names
        return LoHaAdapter(names, (lora[f"{x}.hada_w1_a"], lora[f"{x}.hada_w1_b"], alpha, lora[f"{x}.hada_w2_a"],
                                   lora[f"{x}.hada_w2_b"], t1, t2, dora))
    parts = {n: lora.get(f"{x}.lokr_{n}") for n in ("w1", "w2", "w1_a", "w1_b", "w2_a", "w2_b", "t2")}
    if parts["w1"] is not None or parts["w1_a"] is not None or parts["w2"] is not None or parts["w2_a"] is not None:
        names = {f"{x}.lokr_{n}" for n, t in parts.items() if t is not None}
        used |= names
        return LoKrAdapter(names, (parts["w1"], parts["w2"], alpha, parts["w1_a"], parts["w1_b"], parts["w2_a"],
                                   parts["w2_b"], parts["t2"], dora))
    return None


def load_lora(lora: dict[str, torch.Tensor], to_load: dict[str, Any], log_missing: bool = True) -> dict[Any, Any]:
    """Patches ``{model key: patch}`` of every layer of ``lora`` that ``to_load`` (a key map) knows."""
    patches: dict[Any, Any] = {}
    used: set[str] = set()
    for x, target in to_load.items():
        alpha = None
        if f"{x}.alpha" in lora:
            alpha = lora[f"{x}.alpha"].item()
            used.add(f"{x}.alpha")
        dora = lora.get(f"{x}.dora_scale")
        if dora is not None:
            used.add(f"{x}.dora_scale")
        adapter = _adapter(x, lora, alpha, dora, used)
        if adapter is not None:  # a layer's bias / norm differences still apply beside its adapter (lightx2v)
            patches[target] = adapter
        for suffix, kind, key in ((".diff", "diff", target), (".set_weight", "set", target)):
            if x + suffix in lora:
                patches[key] = (kind, (lora[x + suffix],))
                used.add(x + suffix)
        if x + ".diff_b" in lora and isinstance(target, str) and target.endswith(".weight"):
            patches[target[:-len(".weight")] + ".bias"] = ("diff", (lora[x + ".diff_b"],))
            used.add(x + ".diff_b")
        for norm in ("w_norm", "b_norm"):
            if f"{x}.{norm}" in lora and isinstance(target, str):
                key = target if norm == "w_norm" else target[:-len(".weight")] + ".bias"
                patches[key] = ("diff", (lora[f"{x}.{norm}"],))
                used.add(f"{x}.{norm}")
    if log_missing:
        for key in lora:
            if key not in used:
                log.warning("lora key not loaded: %s", key)
    return patches


def convert_lora(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Files whose keys need more than a name map: Flux's control LoRAs (see families/flux/lora.py)."""
    from ..families.flux.lora import bfl_control_lora, is_bfl_control_lora

    return bfl_control_lora(lora) if is_bfl_control_lora(lora) else lora


def load_lora_for_models(model: Any, clip: Any, lora: dict[str, torch.Tensor], strength_model: float,
                         strength_clip: float, identity: str | None = None) -> tuple[Any, Any]:
    """(patched MODEL clone, patched CLIP clone) with ``lora`` applied at the two strengths."""
    lora = convert_lora(lora)
    key_map: dict[str, Any] = {}
    if model is not None:
        model_lora_keys_unet(model.model, key_map)
    if clip is not None:
        model_lora_keys_clip(clip.cond_stage_model, key_map)
    loaded = load_lora(lora, key_map)
    if identity is not None:
        loaded = KeyedPatches(loaded, identity)
    new_model = new_clip = None
    applied: set[Any] = set()
    if model is not None:
        new_model = model.clone()
        applied |= set(new_model.add_patches(loaded, strength_model))
    if clip is not None:
        new_clip = clip.clone()
        applied |= set(new_clip.add_patches(loaded, strength_clip))
    for key in loaded:
        if key not in applied:
            log.warning("NOT LOADED %s", key)
    return new_model, new_clip
