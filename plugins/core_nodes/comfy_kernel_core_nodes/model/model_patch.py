"""MODEL_PATCH: the small networks of the ``model_patches`` folder (ComfyUI's ModelPatchLoader).

Each kind is recognised by a key of its own: DiffSynth's blockwise Qwen-Image
ControlNet (``controlnet_blocks.0.y_rms.weight``; its inpaint variant reads one
more input channel) and USO's SigLIP style projector for Flux
(``feature_embedder.mid_layer_norm.bias``) and Alibaba PAI's Z-Image fun union
ControlNet (``control_all_x_embedder.2-1.weight``) and InfiniteTalk's audio
network for Wan 2.1 (``audio_proj.proj1.weight``). The MODEL_PATCH is a
:class:`~.patcher.ModelPatcher` over the network's weights, which live in the
model manager like a ControlNet's; ``patcher.model.patch_kind`` names the kind
and ``patcher.model.patch_config`` its sizes. Patch nodes pin it while the
sampler runs (their patch objects list it in ``models()``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import ops
from .auxiliary import AuxiliaryModel, base_name, file_weights
from .devices import storage_dtype
from .files import load_module, read_tensor, tensor_shapes
from .patcher import ModelPatcher

QWEN_BLOCKWISE = "qwen_blockwise_controlnet"
USO_PROJECTOR = "uso_style_projector"
Z_IMAGE_FUN = "z_image_fun_controlnet"
MULTITALK = "multitalk"


class UnsupportedModelPatch(ValueError):
    """The file is no model patch this server knows."""


def _kind(shapes: dict[str, tuple[int, ...]]) -> tuple[str, Any, Callable[[], nn.Module],
                                                        Callable[[str], str | None] | None]:
    from ..families.flux import uso
    from ..families.lumina2 import fun_controlnet as fun
    from ..families.qwen_image import blockwise_controlnet as blockwise
    from ..families.wan import multitalk

    if blockwise.MARKER in shapes:
        config = blockwise.config_from_keys(shapes)
        return QWEN_BLOCKWISE, config, lambda: blockwise.BlockwiseControlNet(config, ops.manual_cast), None
    if uso.MARKER in shapes:
        projector = uso.config_from_keys(shapes)
        return USO_PROJECTOR, projector, lambda: uso.StyleProjector(projector, ops.manual_cast), uso.rename
    if fun.MARKER in shapes:
        control = fun.config_from_keys(shapes)
        return Z_IMAGE_FUN, control, lambda: fun.FunControlNet(control, ops.manual_cast), None
    if multitalk.MARKER in shapes:
        talk = multitalk.config_from_keys(shapes)
        return MULTITALK, talk, lambda: multitalk.MultiTalkPatch(talk, ops.manual_cast), None
    raise UnsupportedModelPatch("unknown model patch: not a DiffSynth Qwen-Image ControlNet (controlnet_blocks.*), "
                                "a USO projector (feature_embedder.*), a Z-Image fun ControlNet "
                                "(control_all_x_embedder.*) or an InfiniteTalk audio patch (audio_proj.*)")


def _weight_dtype(path: str, shapes: dict[str, tuple[int, ...]]) -> torch.dtype:
    """The file's own float dtype, which the weights keep (their layers cast per call, as ComfyUI's do):
    these networks are small beside the model, and fp32 copies of bf16 files would double them on the CPU.
    fp8 files are stored as the diffusion model would be."""
    from ..families.flux.uso import MARKER as USO
    from ..families.lumina2.fun_controlnet import MARKER as FUN
    from ..families.qwen_image.blockwise_controlnet import MARKER as BLOCKWISE
    from ..families.wan.multitalk import MARKER as TALK

    marker = next(k for k in (BLOCKWISE, USO, FUN, TALK) if k in shapes)
    found = read_tensor(path, marker).dtype
    return found if found in (torch.float32, torch.float16, torch.bfloat16) else storage_dtype("unet")


def load_model_patch(path: str) -> ModelPatcher:
    """The MODEL_PATCH in ``path``; its weights are read when a sampler first needs them."""
    shapes = tensor_shapes(path)
    try:
        kind, config, make, rename = _kind(shapes)
    except UnsupportedModelPatch as exc:
        raise UnsupportedModelPatch(f"{base_name(path)}: {exc}") from None
    with torch.device("meta"):
        wanted = frozenset(make().state_dict())
    convert = None
    if kind == Z_IMAGE_FUN:
        from ..families.lumina2.fun_controlnet import convert, network_name

        joined = {k for k in shapes if not k.endswith(".attention.to_q.weight")
                  or {k[:-11] + "to_k.weight", k[:-11] + "to_v.weight"} <= set(shapes)}
        names = {k: network_name(k) for k in joined}
    else:
        names = {k: (rename(k) if rename is not None else k) for k in shapes}
    missing = sorted(wanted - set(names.values()))
    if missing:
        raise UnsupportedModelPatch(f"{base_name(path)}: {len(missing)} weights missing, e.g. {missing[:3]}")

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        with torch.device("meta"):
            net = make()
        net = load_module(net, sd, f"model patch {base_name(path)}")
        if hasattr(net, "check_broken"):
            net.check_broken()
        return net

    def keep(key: str) -> str | None:
        if convert is not None:  # names change after the whole dict is read (q, k, v joined)
            return key
        return names.get(key) if names.get(key) in wanted else None

    dtype = _weight_dtype(path, shapes)
    weights = file_weights(path, "", kind, build, lambda: dtype, wanted, rename=keep, convert=convert)
    holder = AuxiliaryModel(weights)
    holder.patch_kind = kind
    holder.patch_config = config
    return ModelPatcher(holder)
