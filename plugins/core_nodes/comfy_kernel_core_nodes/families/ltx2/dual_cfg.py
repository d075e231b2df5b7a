"""The guider behind LTXVDualCFGGuider: CFG with one scale over an LTX-2 latent's video and another over its audio.

The sampler works on the packed latent (video values first, ``model/nested.py``),
so the two scales apply to the two ranges of it; with one scale (or a video-only
latent) it is plain CFG. Kept apart from the node so the node list imports no torch.
"""

from __future__ import annotations

import math
from typing import Any

from ...model.nested import is_nested
from ...sampling.guider import CFGGuider


class DualCFGGuider(CFGGuider):
    """CFG with ``video_cfg`` over the packed latent's video part and ``audio_cfg`` over the rest."""

    video_cfg = 1.0
    audio_cfg = 1.0
    _video_size: int | None = None

    def set_cfg(self, video_cfg: float, audio_cfg: float | None = None) -> None:  # type: ignore[override]
        self.video_cfg = video_cfg
        self.audio_cfg = video_cfg if audio_cfg is None else audio_cfg
        self.cfg = max(self.video_cfg, self.audio_cfg)

    def sample(self, noise: Any, latent_image: Any, *args: Any, **kwargs: Any) -> Any:
        parts = latent_image.unbind() if is_nested(latent_image) else [latent_image]
        self._video_size = math.prod(parts[0].shape[1:]) if len(parts) > 1 else None
        return super().sample(noise, latent_image, *args, **kwargs)

    def predict_noise(self, x: Any, timestep: Any, model_options: dict[str, Any] | None = None,
                      seed: int | None = None) -> Any:
        split = self._video_size
        if split is None or math.isclose(self.video_cfg, self.audio_cfg):
            self.cfg = self.video_cfg
            return super().predict_noise(x, timestep, model_options, seed)
        video_cfg, audio_cfg = self.video_cfg, self.audio_cfg

        def dual(args: dict[str, Any]) -> Any:
            cond, uncond = args["cond"], args["uncond"]
            out = uncond + (cond - uncond) * video_cfg
            out[..., split:] = uncond[..., split:] + (cond[..., split:] - uncond[..., split:]) * audio_cfg
            return out

        options = {**(model_options or {}), "sampler_cfg_function": dual, "disable_cfg1_optimization": True}
        return super().predict_noise(x, timestep, options, seed)
