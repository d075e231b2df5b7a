"""Wan-Move's nodes (comfy_extras.nodes_wanmove): point tracks that carry the start image's latent features.

Wan-Move 14B is Wan 2.1 I2V fine-tuned to follow point tracks; the model is
unchanged and the tracks go in through the start-image channels. A TRACKS
value is ``{"track_path": [frames, N, 2] pixel x, y, "track_visibility":
[frames, N] bool}``. WanMoveTrackToVideo takes every fourth frame of each
track (one per latent frame), turns the points inside the picture into latent
positions (pixels // 8), and, in every later latent frame, blends the feature
vector the start image's latents hold at the track's first position into the
track's position there (``strength`` 1 copies it). As in ComfyUI the tracks are
shuffled twice with torch's global generator (where two tracks meet, the one
shuffled last wins), the blend is made in place on the latents both prompts
share, and a track invisible in the first frame reads its source at latent
position (-1, -1), the bottom right corner.

GenerateTracks makes straight or quadratic Bezier paths of parallel tracks
spread across the motion direction, WanMoveTracksFromCoords reads the
spline editor's JSON, WanMoveConcatTrack joins two sets, and
WanMoveVisualizeTracks draws them on the images: a disc per visible point and
a tail over the last ``line_resolution`` frames that fades and thins towards
its end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from comfy_kernel.nodes import io

if TYPE_CHECKING:  # the node list is read at start-up, before torch is imported
    import torch

TRACKS = io.Tracks
#: video frames per latent frame, pixels per latent position
TIME_STRIDE, SPACE_STRIDE = 4, 8
#: the colours the tracks are drawn in, in turn
TRACK_COLORS = ((102, 153, 255), (0, 255, 255), (255, 255, 0), (255, 102, 204), (0, 255, 0))
INTERPOLATIONS = ["linear", "ease_in", "ease_out", "ease_in_out", "constant"]


def _visibility(tracks: dict[str, Any], frames: int, count: int) -> torch.Tensor:
    """[frames, count] bool: the tracks' visibility, a per-frame column (from a mask) spread to every track."""
    import torch

    visible = tracks.get("track_visibility")
    if visible is None:
        return torch.ones((frames, count), dtype=torch.bool)
    visible = visible[:frames].bool()
    return visible.expand(-1, count) if visible.shape[-1] == 1 else visible


def latent_positions(path: torch.Tensor, visible: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Tracks [T, N, 2] (pixels) -> [N, (T - 1) // 4 + 1, 2] latent (row, column), -1 where a track is
    hidden or outside the picture. The tracks come out shuffled by torch's global generator."""
    import torch

    order = torch.randperm(path.shape[1])
    path, visible = path[:, order], visible[:, order]
    points, seen = path[::TIME_STRIDE], visible[::TIME_STRIDE]
    x, y = points[..., 0], points[..., 1]
    inside = seen & (x >= 0) & (y >= 0) & (x < width) & (y < height)
    pos = torch.stack([torch.div(y, SPACE_STRIDE, rounding_mode="floor"),
                       torch.div(x, SPACE_STRIDE, rounding_mode="floor")], dim=-1).long()
    pos[~inside] = -1
    return pos.transpose(0, 1)


def carry_features(latents: torch.Tensor, positions: torch.Tensor, strength: float) -> torch.Tensor:
    """Blend, in place, each track's start-frame feature vector into its later positions of ``latents``
    [1, C, T, H, W]; ``positions`` [N, T', 2] (shuffled again first). Returns ``latents``."""
    import torch

    positions = positions[torch.randperm(positions.shape[0])]
    later = positions[:, 1:]
    track, frame = ((later[..., 0] >= 0) & (later[..., 1] >= 0)).nonzero(as_tuple=True)
    if track.numel() == 0:
        return latents
    rows, cols = later[track, frame, 0], later[track, frame, 1]
    src_rows, src_cols = positions[track, 0, 0], positions[track, 0, 1]
    source = latents[0, :, 0, src_rows, src_cols]
    target = latents[0, :, frame + 1, rows, cols]
    latents[0, :, frame + 1, rows, cols] = target + (source - target) * strength
    return latents


class WanMoveTrackToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ...nodes.common import MAX_RESOLUTION

        return io.Schema(node_id="WanMoveTrackToVideo", category="conditioning/video_models", inputs=[
            io.Conditioning.Input("positive"), io.Conditioning.Input("negative"), io.Vae.Input("vae"),
            TRACKS.Input("tracks", optional=True),
            io.Float.Input("strength", default=1.0, min=0.0, max=100.0, step=0.01,
                           tooltip="Strength of the track conditioning."),
            io.Int.Input("width", default=832, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("height", default=480, min=16, max=MAX_RESOLUTION, step=16),
            io.Int.Input("length", default=81, min=1, max=MAX_RESOLUTION, step=4),
            io.Int.Input("batch_size", default=1, min=1, max=4096),
            io.Image.Input("start_image"),
            io.ClipVisionOutput.Input("clip_vision_output", optional=True),
        ], outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                    io.Latent.Output(display_name="latent")])

    @classmethod
    def execute(cls, positive, negative, vae, width, height, length, batch_size, strength, tracks=None,
                start_image=None, clip_vision_output=None) -> io.NodeOutput:
        import torch

        from .nodes import _latent_frames, _with, start_latents

        latent = torch.zeros([batch_size, 16, _latent_frames(length), height // 8, width // 8])
        if start_image is not None:
            concat, mask = start_latents(vae, start_image, width, height, length)
            if tracks is not None and strength > 0.0:
                path = tracks["track_path"][:length]
                visible = _visibility(tracks, path.shape[0], path.shape[1])
                carry_features(concat, latent_positions(path, visible, width, height), strength)
            values = {"concat_latent_image": concat, "concat_mask": mask}
            positive, negative = _with(positive, values), _with(negative, values)
        if clip_vision_output is not None:
            values = {"clip_vision_output": clip_vision_output}
            positive, negative = _with(positive, values), _with(negative, values)
        return io.NodeOutput(positive, negative, {"samples": latent})


def _track_info(path: torch.Tensor, frames: int, track_mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
    import torch

    if track_mask is None:
        visible = torch.ones((frames, path.shape[1]), dtype=torch.bool)
    else:  # a frame is visible where its mask has any pixel set
        visible = (track_mask > 0).any(dim=(1, 2)).unsqueeze(-1)
    return {"track_path": path, "track_visibility": visible}


def _eased(t: torch.Tensor, interpolation: str) -> torch.Tensor:
    """How far along the path each frame is (``t`` from 0 to 1)."""
    import torch

    if interpolation == "constant":
        return torch.zeros_like(t)
    if interpolation == "ease_in":
        return t ** 2
    if interpolation == "ease_out":
        return 1 - (1 - t) ** 2
    if interpolation == "ease_in_out":
        return t * t * (3 - 2 * t)
    return t


class GenerateTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        def coord(name: str, default: float, tooltip: str) -> io.Float.Input:
            return io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip)

        return io.Schema(node_id="GenerateTracks", search_aliases=["motion paths", "camera movement", "trajectory"],
                         category="conditioning/video_models", inputs=[
            io.Int.Input("width", default=832, min=16, max=4096, step=16),
            io.Int.Input("height", default=480, min=16, max=4096, step=16),
            coord("start_x", 0.0, "Normalized X coordinate (0-1) for start position."),
            coord("start_y", 0.0, "Normalized Y coordinate (0-1) for start position."),
            coord("end_x", 1.0, "Normalized X coordinate (0-1) for end position."),
            coord("end_y", 1.0, "Normalized Y coordinate (0-1) for end position."),
            io.Int.Input("num_frames", default=81, min=1, max=1024),
            io.Int.Input("num_tracks", default=5, min=1, max=100),
            io.Float.Input("track_spread", default=0.025, min=0.0, max=1.0, step=0.001,
                           tooltip="Normalized distance between tracks. Tracks are spread perpendicular to the "
                                   "motion direction."),
            io.Boolean.Input("bezier", default=False,
                             tooltip="Enable Bezier curve path using the mid point as control point."),
            coord("mid_x", 0.5, "Normalized X control point for Bezier curve. Only used when 'bezier' is enabled."),
            coord("mid_y", 0.5, "Normalized Y control point for Bezier curve. Only used when 'bezier' is enabled."),
            io.Combo.Input("interpolation", options=INTERPOLATIONS,
                           tooltip="Controls the timing/speed of movement along the path."),
            io.Mask.Input("track_mask", optional=True, tooltip="Optional mask to indicate visible frames."),
        ], outputs=[TRACKS.Output(), io.Int.Output(display_name="track_length")])

    @classmethod
    def execute(cls, width, height, start_x, start_y, mid_x, mid_y, end_x, end_y, num_frames, num_tracks,
                track_spread, bezier=False, interpolation="linear", track_mask=None) -> io.NodeOutput:
        import torch

        sx, sy, mx, my, ex, ey = (start_x * width, start_y * height, mid_x * width, mid_y * height,
                                  end_x * width, end_y * height)
        spread = track_spread * (width + height) / 2
        s = _eased(torch.linspace(0, 1, num_frames), interpolation)
        if bezier:  # quadratic, the mid point as control point
            r = 1 - s
            x, y = r ** 2 * sx + 2 * r * s * mx + s ** 2 * ex, r ** 2 * sy + 2 * r * s * my + s ** 2 * ey
            dx, dy = 2 * r * (mx - sx) + 2 * s * (ex - mx), 2 * r * (my - sy) + 2 * s * (ey - my)
        else:
            x, y = sx + (ex - sx) * s, sy + (ey - sy) * s
            dx, dy = torch.full_like(s, ex - sx), torch.full_like(s, ey - sy)
        # The spread is worked out in double precision from the float32 path, as ComfyUI does per point.
        x, y, dx, dy = x.double(), y.double(), dx.double(), dy.double()
        norm = (dx ** 2 + dy ** 2) ** 0.5
        moving = norm > 0
        across_x = torch.where(moving, -dy / norm.clamp_min(1e-300), torch.ones_like(norm))
        across_y = torch.where(moving, dx / norm.clamp_min(1e-300), torch.zeros_like(norm))
        offsets = (torch.arange(num_tracks, dtype=torch.float64) - (num_tracks - 1) / 2) * spread
        path = torch.stack([x[:, None] + across_x[:, None] * offsets, y[:, None] + across_y[:, None] * offsets],
                           dim=-1).float()
        return io.NodeOutput(_track_info(path, num_frames, track_mask), num_frames)


class WanMoveTracksFromCoords(io.ComfyNode):
    """The spline editor's tracks: JSON lists of {"x", "y"} points, one per frame (a single track or several)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanMoveTracksFromCoords", category="conditioning/video_models", inputs=[
            io.String.Input("track_coords", force_input=True, default="[]", optional=True),
            io.Mask.Input("track_mask", optional=True),
        ], outputs=[TRACKS.Output(), io.Int.Output(display_name="track_length")])

    @classmethod
    def execute(cls, track_coords="[]", track_mask=None) -> io.NodeOutput:
        import torch

        from .tracks import parse_tracks

        batches = parse_tracks(track_coords if isinstance(track_coords, str) else "[]")
        if not batches:
            raise ValueError("track_coords holds no tracks: expected JSON lists of {\"x\": ..., \"y\": ...} points")
        tracks = batches[0]
        frames = min(len(track) for track in tracks)
        path = torch.tensor([[[float(track[f]["x"]), float(track[f]["y"])] for track in tracks]
                             for f in range(frames)], dtype=torch.float32)
        return io.NodeOutput(_track_info(path, frames, track_mask), frames)


class WanMoveConcatTrack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanMoveConcatTrack", category="conditioning/video_models", inputs=[
            TRACKS.Input("tracks_1"), TRACKS.Input("tracks_2", optional=True),
        ], outputs=[TRACKS.Output()])

    @classmethod
    def execute(cls, tracks_1=None, tracks_2=None) -> io.NodeOutput:
        import torch

        if tracks_2 is None:
            return io.NodeOutput(tracks_1)
        return io.NodeOutput({
            "track_path": torch.cat([tracks_1["track_path"], tracks_2["track_path"]], dim=1),
            "track_visibility": torch.cat([tracks_1["track_visibility"], tracks_2["track_visibility"]], dim=-1)})


def _blend(frame: Any, overlay: Any) -> Any:
    """An RGBA overlay composited over a float RGB frame by its alpha."""
    import numpy as np

    layer = np.asarray(overlay)
    alpha = layer[:, :, 3:4] / 255.0
    return layer[:, :, :3] * alpha + frame * (1 - alpha)


def _draw_tail(draw: Any, points: Any, color: tuple[int, int, int], line_width: int, opacity: float) -> None:
    """A track's recent points, newest first, as one-pixel dashes whose alpha and width fall to the oldest."""
    points = points[::-1]
    segments = list(zip(points[:-1], points[1:], strict=True))
    lengths = [float(((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5) for a, b in segments]
    total = sum(lengths)
    if total == 0:
        return
    walked = 0.0
    for (a, b), length in zip(segments, lengths, strict=True):
        steps = max(int(length), 1)
        for i in range(steps):
            ratio = (walked + i / steps * length) / total
            x = int(a[0] + (b[0] - a[0]) * i / steps)
            y = int(a[1] + (b[1] - a[1]) * i / steps)
            draw.line([(x, y), (x + 1, y)], fill=(*color, int(255 * (1 - ratio) * opacity)),
                      width=max(int(line_width * (1 - ratio)), 1))
        walked += length


def draw_tracks(frames: Any, path: Any, visible: Any, tail: int, radius: int, opacity: float,
                line_width: int) -> list[Any]:
    """uint8 frames [T, H, W, 3], integer points [T, N, 2] and visibility [T, N] -> float RGB frames."""
    import numpy as np
    from PIL import Image, ImageDraw

    count, height, width = frames.shape[:3]
    alpha = int(255 * opacity)
    out = []
    for t in range(count):
        frame = frames[t].astype(np.float32)
        discs = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        draw = ImageDraw.Draw(discs)
        tails = []
        for n in range(path.shape[1]):
            if visible is not None and visible[t, n] == 0:
                continue
            x, y = path[t, n]
            color = TRACK_COLORS[n % len(TRACK_COLORS)]
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(*color, alpha))
            recent = path[max(t - tail, 0): t + 1, n]
            if len(recent) > 1:
                tails.append((recent, color))
        frame = _blend(frame, discs)
        if tails:
            lines = Image.new("RGBA", (width, height), (0, 0, 0, 0))
            draw = ImageDraw.Draw(lines, "RGBA")  # on an RGBA layer: later dashes replace, not blend
            for recent, color in tails:
                _draw_tail(draw, recent, color, line_width, opacity)
            frame = _blend(frame, lines)
        out.append(frame.astype(np.uint8))
    return out


class WanMoveVisualizeTracks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="WanMoveVisualizeTracks", category="conditioning/video_models", inputs=[
            io.Image.Input("images"), TRACKS.Input("tracks", optional=True),
            io.Int.Input("line_resolution", default=24, min=1, max=1024),
            io.Int.Input("circle_size", default=12, min=1, max=128, advanced=True),
            io.Float.Input("opacity", default=0.75, min=0.0, max=1.0, step=0.01),
            io.Int.Input("line_width", default=16, min=1, max=128, advanced=True),
        ], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, images, line_resolution, circle_size, opacity, line_width, tracks=None) -> io.NodeOutput:
        import numpy as np
        import torch

        if tracks is None:
            return io.NodeOutput(images)
        path = tracks["track_path"]
        pixels = images * 255.0
        if pixels.shape[0] != path.shape[0]:  # one image (or a few) under every frame of the tracks
            pixels = pixels.repeat(path.shape[0] // images.shape[0], 1, 1, 1)
        visible = _visibility(tracks, path.shape[0], path.shape[1])
        drawn = draw_tracks(pixels.byte().numpy(), path.long().numpy(), visible.numpy(), line_resolution,
                            circle_size, opacity, line_width)
        return io.NodeOutput(torch.from_numpy(np.stack(drawn)).float() / 255.0)
