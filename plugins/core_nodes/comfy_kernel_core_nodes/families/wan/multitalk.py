"""InfiniteTalk / MultiTalk: speech-driven audio cross-attention added to the Wan 2.1 transformer.

The ``model_patches`` file (``wan2.1_infiniteTalk_*``) holds two parts:

- ``audio_proj``: wav2vec2 states (12 layers of 768, 25 a second) around each
  video frame become 32 tokens per latent frame. The first frame sees a
  5-frame window, every later latent frame the windows of its four video
  frames joined (first half of the first, the centres of the middle ones,
  the last half of the last: 8 frames); two ReLU layers, a projection to
  32 tokens and a layer norm follow.
- ``blocks.N``: for each Wan block a layer norm (``norm_x``) and an attention
  (``audio_cross_attn``: ``q_linear``, ``kv_linear``, ``proj``; 40 heads)
  in which each latent frame's tokens attend to that frame's audio tokens. It
  runs after the block's text cross-attention and is added, times the audio
  scale.

With two speakers the audio tokens of both are side by side, and each video
token is given a 1-d rotary position telling whose it is: the self-attention
of the first-frame tokens inside each speaker's mask decides it (the
"attention map"), the keys sit at each speaker's bucket centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...model.attention import optimized_attention

#: the marker key of the patch file; the fixed sizes of the released model
MARKER = "audio_proj.proj1.weight"
HEADS, WINDOW, VAE_STRIDE, AUDIO_LAYERS, AUDIO_WIDTH, TOKENS = 40, 5, 4, 12, 768, 32
#: the rotary buckets of the two speakers ([0, 4] and [20, 24]) and the background's position
CLASS_RANGE, CLASS_INTERVAL = 24, 4


@dataclass(frozen=True)
class MultiTalkConfig:
    dim: int = 5120
    audio_dim: int = 768
    hidden: int = 512
    num_layers: int = 40


def config_from_keys(shapes: dict[str, tuple[int, ...]]) -> MultiTalkConfig:
    """The sizes the weights imply (the block count too, so smaller test files load)."""
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    return MultiTalkConfig(dim=shapes["blocks.0.audio_cross_attn.proj.weight"][0],
                           audio_dim=shapes["audio_proj.norm.weight"][0],
                           hidden=shapes[MARKER][0], num_layers=layers)


class AudioProjection(nn.Module):
    """First-frame windows [B, 1, 5, 12, 768] and later ones [B, F - 1, 8, 12, 768] -> [B, F, 32, audio_dim]."""

    def __init__(self, c: MultiTalkConfig, ops: Any) -> None:
        super().__init__()
        self.seq_len = WINDOW
        self.proj1 = ops.Linear(WINDOW * AUDIO_LAYERS * AUDIO_WIDTH, c.hidden)
        self.proj1_vf = ops.Linear((WINDOW + VAE_STRIDE - 1) * AUDIO_LAYERS * AUDIO_WIDTH, c.hidden)
        self.proj2 = ops.Linear(c.hidden, c.hidden)
        self.proj3 = ops.Linear(c.hidden, TOKENS * c.audio_dim)
        self.norm = ops.LayerNorm(c.audio_dim)

    def forward(self, first: torch.Tensor, later: torch.Tensor) -> torch.Tensor:
        b = first.shape[0]
        x = torch.cat([F.relu(self.proj1(first.flatten(2))), F.relu(self.proj1_vf(later.flatten(2)))], dim=1)
        x = self.proj3(F.relu(self.proj2(x)))
        return self.norm(x.view(b, x.shape[1], TOKENS, -1))


def rotate_pairs(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """1-d rotary embedding over interleaved pairs of the last axis, at float ``positions`` (one per row)."""
    d = x.shape[-1]
    freqs = 1.0 / 10000 ** (torch.arange(0, d, 2, device=x.device)[: d // 2].float() / d)
    angles = (positions.float()[:, None] * freqs).repeat_interleave(2, dim=-1)
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (xf * angles.cos() + rotated * angles.sin()).type_as(x)


class AudioAttention(nn.Module):
    """Video tokens [B, T * S, dim] attend, frame by frame, to audio tokens [T, A, audio_dim]."""

    def __init__(self, c: MultiTalkConfig, ops: Any) -> None:
        super().__init__()
        self.dim, self.heads = c.dim, HEADS
        self.q_linear = ops.Linear(c.dim, c.dim)
        self.kv_linear = ops.Linear(c.audio_dim, 2 * c.dim)
        self.proj = ops.Linear(c.dim, c.dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, grid: tuple[int, int, int],
                attn_map: torch.Tensor | None = None) -> torch.Tensor:
        frames, s = grid[0], grid[1] * grid[2]
        b = x.shape[0]
        extra = None
        two = attn_map is not None and attn_map.shape[0] > 1
        # one trailing frame of tokens without audio (ComfyUI's two paths test for it differently)
        trailing = b * frames != audio.shape[0] if two else x.shape[1] != frames * s
        if trailing:
            extra, x, frames = x[:, -s:], x[:, :-s], frames - 1
        heads, d = self.heads, self.dim // self.heads
        q = self.q_linear(x.reshape(b * frames, s, self.dim)).view(b * frames, s, heads, d)
        k, v = self.kv_linear(audio).view(audio.shape[0], audio.shape[1], 2, heads, d).unbind(2)
        if b * frames != k.shape[0]:  # ComfyUI needs one audio frame per latent frame and batch item
            k, v = k.repeat(b, 1, 1, 1), v.repeat(b, 1, 1, 1)
        if two:
            positions = speaker_positions(attn_map)
            q = rotate_pairs(q.reshape(b, frames * s, heads, d).transpose(1, 2), positions)
            q = q.transpose(1, 2).reshape(b * frames, s, heads, d)
            n_a = k.shape[1]
            centres = torch.full((n_a,), (CLASS_RANGE - CLASS_INTERVAL / 2), device=k.device)
            centres[: n_a // 2] = CLASS_INTERVAL / 2
            k = rotate_pairs(k.transpose(1, 2), centres).transpose(1, 2)
        out = optimized_attention(q.flatten(2), k.flatten(2), v.flatten(2), heads)
        out = self.proj(out).reshape(b, frames * s, self.dim)
        if extra is not None:
            out = torch.cat([out, torch.zeros_like(extra)], dim=1)
        return out


def speaker_positions(attn_map: torch.Tensor) -> torch.Tensor:
    """Per token the rotary position of its speaker: each map scaled into its bucket, the larger one wins
    (ties to the first speaker)."""
    def scaled(m: torch.Tensor, low: float, high: float) -> torch.Tensor:
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo + 1e-8) * (high - low) + low

    first = scaled(attn_map[0], 0, CLASS_INTERVAL)
    second = scaled(attn_map[1], CLASS_RANGE - CLASS_INTERVAL, CLASS_RANGE)
    back = torch.full_like(first, CLASS_RANGE // 2)
    table = torch.stack([first, second, back], dim=1)
    return table.gather(1, attn_map.argmax(dim=0)[:, None])[:, 0]


class AudioBlock(nn.Module):
    def __init__(self, c: MultiTalkConfig, ops: Any) -> None:
        super().__init__()
        self.audio_cross_attn = AudioAttention(c, ops)
        self.norm_x = ops.LayerNorm(c.dim)


class MultiTalkPatch(nn.Module):
    """The network of an InfiniteTalk / MultiTalk ``model_patches`` file."""

    def __init__(self, c: MultiTalkConfig, ops: Any) -> None:
        super().__init__()
        self.audio_proj = AudioProjection(c, ops)
        self.blocks = nn.ModuleList([AudioBlock(c, ops) for _ in range(c.num_layers)])


def attention_map(q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int, int], masks: torch.Tensor,
                  splits: int = 2) -> torch.Tensor:
    """How much each video token [B, N, H, D] attends to each speaker's first-frame tokens: [speakers, N].

    Heads are taken in ``splits`` equal groups (a remainder head is left out, as ComfyUI leaves it), each
    group's masked softmax mass averaged over its heads and the batch kept; the groups are averaged.
    """
    ref = k[:, : grid[1] * grid[2]]
    per = q.shape[2] // splits
    total = 0
    for i in range(splits):
        qs = q[:, :, i * per:(i + 1) * per].transpose(1, 2) * q.shape[-1] ** -0.5
        ks = ref[:, :, i * per:(i + 1) * per].permute(0, 2, 3, 1)
        scores = qs @ ks
        weights = (scores - scores.amax(-1, keepdim=True)).exp()
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-8)
        maps = [(weights * m.view(1, 1, 1, -1)).sum(-1).div(m.sum() + 1e-8).mean(1) for m in masks.to(q)]
        total = total + torch.cat(maps, dim=0)
    return total / splits


def audio_windows(states: list[torch.Tensor], start: int, end: int) -> torch.Tensor:
    """[speakers, end - start, 5, layers, C]: each video frame's five neighbours (clamped at the ends); past
    the end of the sound the first frame stands in (most likely silence)."""
    out = []
    offsets = torch.arange(-2, 3)
    for s in states:
        if end > s.shape[0]:
            s = torch.cat([s, s[:1].expand(end - s.shape[0], *s.shape[1:])], dim=0)
        index = (torch.arange(start, end)[:, None] + offsets).clamp(0, s.shape[0] - 1)
        out.append(s[index])
    return torch.stack(out)


def audio_tokens(proj: AudioProjection, states: list[torch.Tensor], start: int, end: int) -> torch.Tensor:
    """The audio tokens of video frames ``start`` .. ``end``: [1, latent frames, speakers * 32, audio_dim]."""
    windows = audio_windows(states, start, end)
    first = windows[:, :1]
    later = windows[:, 1:].unflatten(1, (-1, VAE_STRIDE))
    mid = proj.seq_len // 2
    later = torch.cat([later[:, :, 0, : mid + 1], later[:, :, 1:-1, mid], later[:, :, -1, mid:]], dim=2)
    tokens = proj(first, later.to(first))
    return torch.cat(tokens.split(1), dim=2)


class MultiTalkAttnMapPatch:
    """``attn1_patch``: keeps the self-attention's speaker map for the block's audio attention."""

    def __init__(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        options = args["transformer_options"]
        options["x_ref_attn_map"] = attention_map(args["q"], args["k"], options["grid_sizes"],
                                                  self.masks.to(args["x"].device))
        return args["x"]


class MultiTalkAudioPatch:
    """``attn2_patch``: the patch block of the same index adds its audio attention (times ``scale``)."""

    def __init__(self, model_patch: Any, scale: float = 1.0) -> None:
        self.model_patch, self.scale = model_patch, scale

    def __call__(self, args: dict[str, Any]) -> torch.Tensor:
        options = args["transformer_options"]
        x = args["x"]
        audio = options["audio_embeds"].squeeze(0).to(device=x.device, dtype=x.dtype)
        with self.model_patch.use() as holder:
            block = holder.loaded_module.blocks[options["block_index"]]
            out = block.audio_cross_attn(block.norm_x(x), audio, tuple(options["grid_sizes"]),
                                         options.pop("x_ref_attn_map", None))
        return x + out * self.scale

    def models(self) -> list[Any]:
        return [self.model_patch]


class MotionFramesWrapper:
    """OUTER_SAMPLE wrapper: every model call sees the motion frames' latents as its first latent frames;
    when extending a video, the result starts with them too."""

    def __init__(self, motion_latent: torch.Tensor, model_patch: Any, extend: bool = False) -> None:
        self.motion_latent, self.model_patch, self.extend = motion_latent, model_patch, extend

    def __call__(self, executor: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        guider = executor.class_obj
        known = guider.model_patcher.model.process_latent_in(self.motion_latent)
        wrappers = guider.model_options["transformer_options"].setdefault("wrappers", {})
        wrappers.setdefault("apply_model", {})["MultiTalk_apply_model"] = [_fixed_start(known)]
        result = executor(*args, **kwargs)
        if self.extend:
            n = self.motion_latent.shape[2]
            result = torch.cat([self.motion_latent.to(result), result[:, :, n:]], dim=2)
        return result


def _fixed_start(known: torch.Tensor) -> Any:
    def wrapper(executor: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = x.clone()
        x[:, :, : known.shape[2]] = known.to(x)
        return executor(x, *args, **kwargs)

    return wrapper
