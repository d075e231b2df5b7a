"""Compose Camera Angle Prompt: an orbit camera around a subject, as camera_info and as shot wording.

Multi-angle edit LoRAs (Qwen-Image-Edit's) are trained on prompts made of
three terms: one of eight 45-degree azimuth sectors, one of four elevation
bands and one of three distances. The frontend draws the same choice in a 3D
preview (its ``view`` widget only picks what the preview shows and never
reaches the node's result). The camera sits 6 units from a subject at the
origin with a 35-degree field of view; ``zoom`` 0..10 maps to a lens zoom of
1 to 1.875.
"""

from __future__ import annotations

import math
from typing import Any

from comfy_kernel.nodes import io

from .common import NodeDef

AZIMUTHS = ("front view", "front-right quarter view", "right side view", "back-right quarter view", "back view",
            "back-left quarter view", "left side view", "front-left quarter view")
#: (upper bound, term): the first band whose bound the value is below; None closes the list.
ELEVATIONS = ((-15, "low-angle shot"), (15, "eye-level shot"), (45, "elevated shot"), (None, "high-angle shot"))
DISTANCES = ((2, "wide shot"), (6, "medium shot"), (None, "close-up"))
DISTANCE, FOV, MAX_LENS_ZOOM = 6.0, 35.0, 1.875


def _band(value: float, bands: tuple[tuple[float | None, str], ...]) -> str:
    return next(term for upper, term in bands if upper is None or value < upper)


def shot_description(horizontal: float, vertical: float, zoom: float) -> str:
    """``"<azimuth> <elevation> <distance>"``, e.g. ``"front view eye-level shot medium shot"``."""
    azimuth = AZIMUTHS[int(((horizontal % 360) + 22.5) // 45) % len(AZIMUTHS)]
    return f"{azimuth} {_band(vertical, ELEVATIONS)} {_band(zoom, DISTANCES)}"


def camera_info(horizontal: float, vertical: float, zoom: float) -> dict[str, Any]:
    """The LOAD3D_CAMERA dict of the orbit camera (y up, azimuth 0 on +z, 90 on +x)."""
    yaw, pitch = math.radians(horizontal), math.radians(vertical)
    return {"position": {"x": DISTANCE * math.cos(pitch) * math.sin(yaw), "y": DISTANCE * math.sin(pitch),
                         "z": DISTANCE * math.cos(pitch) * math.cos(yaw)},
            "target": {"x": 0.0, "y": 0.0, "z": 0.0},
            "zoom": 1.0 + (MAX_LENS_ZOOM - 1.0) * zoom / 10.0,
            "cameraType": "perspective", "fov": FOV}


class CameraAngle(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CameraAngle", display_name="Compose Camera Angle Prompt", category="3d",
            search_aliases=["multi angle", "camera view", "orbit camera", "shot angle", "camera prompt"],
            description="A camera angle around a subject, as camera_info for 3D nodes and as a shot description "
                        "for prompts.",
            inputs=[io.Int.Input("horizontal_angle", default=0, min=0, max=360, step=1,
                                 tooltip="Azimuth in degrees: 0 front, 90 right side, 180 back."),
                    io.Int.Input("vertical_angle", default=0, min=-30, max=60, step=1,
                                 tooltip="Elevation in degrees: below 0 looks up from below, above 0 looks down."),
                    io.Float.Input("zoom", default=5.0, min=0.0, max=10.0, step=0.1,
                                   tooltip="0 is a wide shot, 10 a close-up; also camera_info's lens zoom."),
                    io.Image.Input("image", optional=True,
                                   tooltip="Shown on the subject's front face in the 3D preview only."),
                    io.String.Input("view", default="", optional=True, socketless=True,
                                    extra_dict={"widgetType": "CAMERA_ANGLE_VIEW"})],
            outputs=[io.Load3DCamera.Output(display_name="camera_info"), io.String.Output(display_name="prompt")])

    @classmethod
    def execute(cls, horizontal_angle: int, vertical_angle: int, zoom: float, image: Any = None,
                view: str | None = None) -> io.NodeOutput:
        horizontal = max(0, min(360, int(horizontal_angle)))
        vertical = max(-30, min(60, int(vertical_angle)))
        zoom = max(0.0, min(10.0, float(zoom)))
        return io.NodeOutput(camera_info(horizontal, vertical, zoom), shot_description(horizontal, vertical, zoom))


NODES = [NodeDef("CameraAngle", CameraAngle, "Compose Camera Angle Prompt", "comfy_extras.nodes_camera_angle")]
