"""``comfy_api.v0_0_2``: the pinned API version, identical to ``latest`` on comfy-kernel."""

from comfy_api.latest import *  # noqa: F403
from comfy_api.latest import ComfyAPI, ComfyAPISync, ComfyExtension, Input, InputImpl, Types, io, ui  # noqa: F401
