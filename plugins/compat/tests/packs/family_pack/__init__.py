"""A pack reaching into model-family code at import time, as KJNodes, AnimateDiff-Evolved,
Advanced-ControlNet and IPAdapter_plus do.

The module-level imports are the names those packs import (Flux rotary
helpers, the Lumina feed-forward, the Wan VAE layers, the tiny autoencoder
parts, KL VAE blocks, ControlNet, CLIP vision and hooks objects); the LTX,
MiniMax, context-window and quant_ops imports sit in ``try`` blocks as in
KJNodes, and the node that needs them is only registered when they import.
Each node checks the behaviour of what it imported and reports numbers.
"""

import comfy.hooks
import comfy.utils
import folder_paths
import torch
from comfy.clip_vision import ClipVisionModel, Output  # noqa: F401
from comfy.controlnet import (  # noqa: F401
    ControlBase,
    ControlLora,
    ControlNet,
    ControlNetSD35,
    StrengthType,
    T2IAdapter,
    broadcast_image_to,
)
from comfy.hooks import HookGroup, HookKeyframe, HookKeyframeGroup
from comfy.ldm.flux.layers import DoubleStreamBlock, SingleStreamBlock, timestep_embedding  # noqa: F401
from comfy.ldm.flux.math import apply_rope, rope
from comfy.ldm.lumina.model import FeedForward
from comfy.ldm.modules.diffusionmodules.model import ResnetBlock  # noqa: F401
from comfy.ldm.wan.model import WanI2VCrossAttention, WanT2VCrossAttention  # noqa: F401
from comfy.ldm.wan.vae import CausalConv3d, RMS_norm
from comfy.taesd.taesd import Block, Clamp, conv
from torch import nn

try:
    from comfy.ldm.lightricks.model import apply_rotary_emb
    from comfy_extras.nodes_lt import get_noise_mask  # noqa: F401
except ImportError:
    apply_rotary_emb = None
try:
    import comfy.quant_ops  # noqa: F401
    from comfy.ldm.minimax.model import PackedLayout  # noqa: F401
except ImportError:
    PackedLayout = None
try:
    import comfy.context_windows as context_windows
except ImportError:
    context_windows = None


def build_tiny_decoder(sd):
    """The decoder a positional state dict describes: Block where ``N.conv.0.weight``, conv where ``N.weight``."""
    by_index = {}
    for key, value in sd.items():
        index, _, rest = key.partition(".")
        by_index.setdefault(int(index), {})[rest] = value
    layers = []
    for i in range(max(by_index) + 1):
        entry = by_index.get(i)
        if entry is None:
            layers.append(Clamp() if i == 0 else nn.ReLU() if i == 2 else nn.Upsample(scale_factor=2))
        elif "conv.0.weight" in entry:
            w = entry["conv.0.weight"]
            layers.append(Block(w.shape[1], w.shape[0], use_midblock_gn="pool.0.weight" in entry))
        else:
            w = entry["weight"]
            layers.append(conv(w.shape[1], w.shape[0], bias="bias" in entry))
    decoder = nn.Sequential(*layers)
    decoder.load_state_dict(sd)
    return decoder


class FPTinyDecode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "decoder": (folder_paths.get_filename_list("vae_approx"),)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "family_pack"

    def decode(self, samples, decoder):
        sd = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("vae_approx", decoder), safe_load=True)
        with torch.no_grad():
            image = build_tiny_decoder(sd)(samples["samples"].float()).clamp(0, 1)
        return (image.movedim(1, -1),)


class FPStats:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "stats"
    OUTPUT_NODE = True
    CATEGORY = "family_pack"

    def stats(self, image):
        return {"ui": {"stats": [{"shape": list(image.shape), "sum": float(image.double().sum()),
                                  "first": [float(v) for v in image.flatten()[:4]]}]}}


class FPChecks:
    """Numbers from the family code: rotary positions, the Wan causal convolution, the Lumina feed-forward,
    ControlNet and hooks helpers."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ()
    FUNCTION = "check"
    OUTPUT_NODE = True
    CATEGORY = "family_pack"

    def check(self, seed):
        g = torch.Generator().manual_seed(seed)
        out = {"rope": self.rope(g), "wan": self.wan(g), "feed_forward": self.feed_forward(g),
               "control": self.control(), "hooks": self.hooks(), "ltx": apply_rotary_emb is not None,
               "minimax": PackedLayout is not None, "context_windows": context_windows is not None}
        return {"ui": {"checks": [out]}}

    @staticmethod
    def rope(g):
        """Flux rotation of query/key pairs [1, heads, tokens, 8] by position, against cos/sin written out."""
        q, k = torch.randn(1, 2, 5, 8, generator=g), torch.randn(1, 2, 5, 8, generator=g)
        pos = torch.arange(5, dtype=torch.float32)[None]
        pe = rope(pos, 8, 10000.0)[:, None]
        q2, k2 = apply_rope(q, k, pe)
        freqs = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
        angle = pos[0, :, None].double() * freqs
        x0, x1 = q.double()[..., 0::2], q.double()[..., 1::2]
        want = torch.stack([x0 * angle.cos() - x1 * angle.sin(), x0 * angle.sin() + x1 * angle.cos()], -1)
        return {"max_err": float((q2.double() - want.flatten(-2)).abs().max()),
                "k_norm_err": float((k2.norm(dim=-1) - k.norm(dim=-1)).abs().max()),
                "moved": float((q2 - q).abs().max())}

    @staticmethod
    def wan(g):
        """A causal conv: changing later frames leaves earlier outputs alone."""
        layer = CausalConv3d(3, 4, 3, padding=1)
        norm = RMS_norm(4, images=False)
        nn.init.ones_(norm.gamma)
        x = torch.randn(1, 3, 5, 8, 8, generator=g)
        changed = x.clone()
        changed[:, :, 3:] += 1
        with torch.no_grad():
            a, b = norm(layer(x)), norm(layer(changed))
        return {"shape": list(a.shape), "early_diff": float((a[:, :, :3] - b[:, :, :3]).abs().max()),
                "late_diff": float((a[:, :, 3:] - b[:, :, 3:]).abs().max()),
                "channel_rms": float(a.pow(2).mean(1).sqrt().mean())}

    @staticmethod
    def feed_forward(g):
        """KJNodes' chunking: FeedForward.forward called on the pack's own layer, per chunk of tokens."""
        layer = nn.Module()
        layer.w1, layer.w2, layer.w3 = nn.Linear(8, 16, bias=False), nn.Linear(16, 8, bias=False), nn.Linear(8, 16, bias=False)
        x = torch.randn(1, 6, 8, generator=g)
        with torch.no_grad():
            whole = FeedForward.forward(layer, x)
            chunks = torch.cat([FeedForward.forward(layer, c) for c in torch.chunk(x, 3, dim=1)], dim=1)
            want = layer.w2(torch.nn.functional.silu(layer.w1(x)) * layer.w3(x))
        return {"chunk_err": float((whole - chunks).abs().max()), "err": float((whole - want).abs().max())}

    @staticmethod
    def control():
        batch = broadcast_image_to(torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4), 5, 1)
        return {"controlnet_is_control_base": issubclass(ControlNet, ControlBase),
                "strength_types": [s.name for s in StrengthType], "broadcast": [float(v) for v in batch[:, 0, 0, 0]]}

    @staticmethod
    def hooks():
        keyframes = HookKeyframeGroup()
        keyframes.add(HookKeyframe(strength=0.5, start_percent=0.2))
        group = HookGroup()
        conds = [[[torch.zeros(1, 4, 8), {}]]]
        new = [[[torch.ones(1, 4, 8), {}]]]
        out = comfy.hooks.set_conds_props_and_combine(conds, new, strength=0.5, set_cond_area="mask bounds",
                                                      mask=torch.ones(1, 8, 8), hooks=group,
                                                      timesteps_range=(0.0, 0.5))
        added = out[0][1][1]
        return {"entries": len(out[0]), "keyframes": len(keyframes.keyframes), "mask_strength": added["mask_strength"],
                "timesteps": [added["start_percent"], added["end_percent"]]}


NODE_CLASS_MAPPINGS = {"FPTinyDecode": FPTinyDecode, "FPStats": FPStats, "FPChecks": FPChecks}
if apply_rotary_emb is not None:
    NODE_CLASS_MAPPINGS["FPLTXOnly"] = FPChecks
