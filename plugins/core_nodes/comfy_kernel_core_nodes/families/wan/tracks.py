"""ATI's node (comfy_extras.nodes_wan ``WanTrackToVideo``): motion tracks drawn on the start image.

Wan 2.1 I2V ATI is the I2V 14B model fine-tuned to follow point tracks; the
model is unchanged and the tracks go in through the start-image channels.
Each track is up to 121 points (x, y in pixels of the output size; padded
with invisible points) of a 24-frame-a-second motion; it is resampled to the
video's frames (the first point kept, the other 120 repeated and strided to
length - 1) with coordinates relative to the frame centre in units of half
the short edge. On the latents of the start image followed by grey frames
(scaled by the Wan 2.1 latent format: the blend is not linear in the raw
latents), every latent frame after the first gets, at each position, the
start image's latent features at the tracks' first points, weighted by
exp(-temperature x squared distance) to where the tracks are in that frame
(four video frames averaged, the ``topk`` nearest tracks), blended over the
frame's own latents; that weight is also the frame's mask (the first frame's
is 1). The results go in as ``concat_latent_image`` / ``concat_mask``. An
empty or unreadable track list gives WanImageToVideo's conditioning.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from comfy_kernel.nodes import io

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

#: points per track as ATI takes them (five seconds at 24 frames a second, plus the start)
TRACK_POINTS = 121


def parse_tracks(text: str) -> list[list[list[dict[str, float]]]]:
    """The JSON of the ``tracks`` input as batches of tracks of points ({"x", "y"}); [] when unreadable.

    One track (a list of points), a list of tracks, or a list of such lists
    (one per batch item) are accepted; single quotes are read as double.
    Anything else is read as no tracks (ComfyUI fails on some of it).
    """
    try:
        data = json.loads(text.replace("'", '"'))
    except json.JSONDecodeError:
        return []
    if not isinstance(data, list) or not data:
        return []
    if isinstance(data[0], dict):
        data = [data]
    if isinstance(data[0], list) and data[0] and isinstance(data[0][0], dict):
        data = [data]
    shaped = all(isinstance(batch, list) and batch and all(
        isinstance(track, list) and track and all(isinstance(p, dict) and "x" in p and "y" in p for p in track)
        for track in batch) for batch in data)
    return data if shaped else []


def track_points(track: list[dict[str, float]]) -> torch.Tensor:
    """[121, 3]: x, y and visibility (1) of the first 121 points, invisible zeros after the last."""
    import torch

    points = torch.zeros(TRACK_POINTS, 3)
    for i, point in enumerate(track[:TRACK_POINTS]):
        points[i] = torch.tensor([float(point["x"]), float(point["y"]), 1.0])
    return points


def resample_tracks(tracks: torch.Tensor, width: int, height: int, frames: int) -> torch.Tensor:
    """Tracks [N, 121, 3] in pixels -> [frames + 1, N, 4]: time in [-1, 1], x and y from the frame centre
    in half short edges, visibility as +-1; the first point, then the other 120 stretched to ``frames``.

    Later frame k takes point 1 + (1 + k * a) // b, where a / b is 120 / frames
    in lowest terms: ComfyUI's repeat-and-stride. When ``frames`` is a multiple
    of 120 that runs one point past the end (ComfyUI fails there); the last
    point is taken instead.
    """
    import torch

    short = min(width, height)
    xy = (tracks[..., :2] - torch.tensor([width / 2, height / 2])) / short * 2
    visible = tracks[..., 2:] * 2 - 1
    time = torch.linspace(-1, 1, TRACK_POINTS).view(1, -1, 1).expand_as(visible)
    out = torch.cat([time, xy, visible], dim=-1).transpose(0, 1)
    common = math.gcd(TRACK_POINTS - 1, frames)
    stride, repeat = (TRACK_POINTS - 1) // common, frames // common
    index = ((1 + torch.arange(frames) * stride) // max(repeat, 1)).clamp(max=TRACK_POINTS - 2)
    return torch.cat([out[:1], out[1:][index]])


def _batch_indices(count: int, batch_size: int) -> list[int]:
    """Which of ``count`` items fill a batch of ``batch_size`` (ComfyUI's resize rule)."""
    if count in (0, batch_size):
        return list(range(count))
    if batch_size <= 1:
        return list(range(min(count, batch_size)))
    if batch_size < count:
        scale = (count - 1) / (batch_size - 1)
        return [min(round(i * scale), count - 1) for i in range(batch_size)]
    scale = count / batch_size
    return [min(math.floor((i + 0.5) * scale), count - 1) for i in range(batch_size)]


def track_motion(tracks: torch.Tensor, latents: torch.Tensor, temperature: float,
                 topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One video's tracks [frames, N, 4] drawn on its latents [C, T, h, w] (frames = 4 (T - 1) + 1):
    the blend weights [T, h, w] (1 for the first frame) and the blended latents [C, T, h, w]."""
    import torch
    import torch.nn.functional as F

    channels, t, h, w = latents.shape
    n = tracks.shape[1]
    ax, ay = w / min(h, w), h / min(h, w)
    xy, visible = tracks[:, :, 1:3], tracks[:, :, 3:].clamp(0, 1)
    # where each track is in each latent frame after the first: its visible points of four frames averaged
    seen = visible[1:].view(t - 1, 4, n, 1).sum(1)
    place = (xy[1:] * visible[1:]).view(t - 1, 4, n, 2).sum(1) / (seen + 1e-5)
    xs, ys = torch.linspace(-ax, ax, w), torch.linspace(-ay, ay, h)
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)], dim=-1)
    distance = (place[:, None, None] - grid[None, :, :, None]).pow(2).sum(-1)
    weight = torch.exp(-distance * temperature) * seen.clamp(0, 1).view(t - 1, 1, 1, n)
    nearest, index = torch.topk(weight, k=min(topk, n), dim=-1)
    # the start latents' features at the tracks' first points
    start = (xy[:1] / torch.tensor([ax, ay])).clamp(-1, 1).to(latents.dtype)
    features = F.grid_sample(latents[:, :1].transpose(0, 1), start[None], mode="bilinear", padding_mode="zeros",
                             align_corners=False)[0, :, 0].transpose(0, 1)
    drawn = (features[index] * nearest[..., None]).sum(-2).permute(3, 0, 1, 2)
    total = nearest.sum(-1)
    blended = torch.cat([latents[:, :1], drawn + latents[:, 1:] * (1 - total.clamp(0, 1))], dim=1)
    return torch.cat([torch.ones_like(total[:1]), total]), blended


class WanTrackToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        return io.Schema(node_id="WanTrackToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            io.String.Input("tracks", multiline=True, default="[]"),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=81, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.Float.Input("temperature", default=220.0, min=1.0, max=1000.0, step=0.1),
            io.Int.Input("topk", default=2, min=1, max=10),
            io.Image.Input("start_image"),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, vae, tracks, width, height, length, batch_size, temperature, topk,
                start_image=None, clip_vision_output=None) -> io.NodeOutput:
        import torch

        from ...model.base import resize_to_batch_size
        from ...model.latent_formats import Wan21
        from .nodes import WanImageToVideo, _fit, _latent_frames, _with

        batches = parse_tracks(tracks)
        if not batches:
            return WanImageToVideo.execute(positive, negative, vae, width, height, length, batch_size,
                                           start_image=start_image, clip_vision_output=clip_vision_output)
        latent = torch.zeros([batch_size, 16, _latent_frames(length), height // 8, width // 8])
        resampled = [resample_tracks(torch.stack([track_points(track) for track in batch]), width, height,
                                     length - 1) for batch in batches]
        if start_image is not None:
            start_image = _fit(start_image[:batch_size], width, height)
            videos = torch.full((start_image.shape[0], length, height, width, start_image.shape[-1]), 0.5,
                                dtype=start_image.dtype)
            videos[:, 0] = start_image
            videos = resize_to_batch_size(videos, batch_size)
            latents = Wan21().process_in(torch.cat([vae.encode(videos[i, ..., :3]) for i in range(batch_size)]))
            drawn = [track_motion(resampled[j], latents[i], temperature, topk)
                     for i, j in enumerate(_batch_indices(len(resampled), batch_size))]
            mask = torch.stack([m for m, _ in drawn])[:, None].expand(-1, 4, -1, -1, -1)
            values = {"concat_mask": 1.0 - mask, "concat_latent_image": Wan21().process_out(
                torch.stack([blended for _, blended in drawn]))}
            positive, negative = _with(positive, values), _with(negative, values)
        if clip_vision_output is not None:
            values = {"clip_vision_output": clip_vision_output}
            positive, negative = _with(positive, values), _with(negative, values)
        return io.NodeOutput(positive, negative, {"samples": latent})
