"""The unCLIP models: the image embedding, noise-augmented, is the UNet's ADM vector."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ...model.base import BaseModel
from ..sd.models import SD20
from ..sd.unet import timestep_embedding


def _squaredcos_betas(timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), max_beta)
                     for i in range(timesteps)])


class NoiseAugmentor:
    """CLIP embedding noise augmentation: q_sample at a noise level, plus that level's sinusoidal embedding."""

    def __init__(self, timestep_dim: int, timesteps: int = 1000, max_noise_level: int = 1000) -> None:
        alphas_cumprod = np.cumprod(1.0 - _squaredcos_betas(timesteps), axis=0)
        self.sqrt_alphas_cumprod = torch.tensor(np.sqrt(alphas_cumprod), dtype=torch.float32)
        self.sqrt_one_minus_alphas_cumprod = torch.tensor(np.sqrt(1.0 - alphas_cumprod), dtype=torch.float32)
        self.max_noise_level = max_noise_level
        self.timestep_dim = timestep_dim
        self.data_mean = torch.zeros(timestep_dim)[None, :]
        self.data_std = torch.ones(timestep_dim)[None, :]

    def __call__(self, x: torch.Tensor, noise_level: torch.Tensor,
                 seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.data_mean.to(x.device)) / self.data_std.to(x.device)
        if seed is None:
            noise = torch.randn_like(x)
        else:
            noise = torch.randn(x.size(), dtype=x.dtype, generator=torch.Generator().manual_seed(seed)).to(x.device)
        a = self.sqrt_alphas_cumprod.to(x.device).gather(-1, noise_level).reshape(-1, *([1] * (x.ndim - 1)))
        b = self.sqrt_one_minus_alphas_cumprod.to(x.device).gather(-1, noise_level).reshape(-1, *([1] * (x.ndim - 1)))
        z = a * x + b * noise
        z = z * self.data_std.to(x.device) + self.data_mean.to(x.device)
        return z, timestep_embedding(noise_level, self.timestep_dim)


def unclip_adm(unclip_conditioning: list[dict[str, Any]], device: Any, augmentor: NoiseAugmentor,
               noise_augment_merge: float = 0.0, seed: int | None = None) -> torch.Tensor:
    """The ADM vector of the unCLIP entries: each image embedding augmented and weighted, several merged."""
    adm_inputs, noise_aug = [], []
    for entry in unclip_conditioning:
        for embed in entry["clip_vision_output"].image_embeds:
            level = round((augmentor.max_noise_level - 1) * entry["noise_augmentation"])
            c_adm, level_emb = augmentor(embed.to(device), torch.tensor([level], device=device), seed=seed)
            adm_inputs.append(torch.cat((c_adm, level_emb), 1) * entry["strength"])
            noise_aug.append(entry["noise_augmentation"])
    adm_out = adm_inputs[-1]
    if len(noise_aug) > 1:
        adm_out = torch.stack(adm_inputs).sum(0)
        level = round((augmentor.max_noise_level - 1) * noise_augment_merge)
        c_adm, level_emb = augmentor(adm_out[:, :augmentor.timestep_dim], torch.tensor([level], device=device))
        adm_out = torch.cat((c_adm, level_emb), 1)
    return adm_out


class SD21UNCLIPModel(BaseModel):
    def __init__(self, model_config: Any, model_type: Any, weights: Any = None, device: Any = None) -> None:
        super().__init__(model_config, model_type, weights, device)
        self.noise_augmentor = NoiseAugmentor(model_config.noise_aug_config["timestep_dim"])

    def encode_adm(self, **kwargs: Any) -> torch.Tensor:
        conditioning = kwargs.get("unclip_conditioning")
        device = kwargs["device"]
        if conditioning is None:
            return torch.zeros((1, self.adm_channels), device=device)
        seed = (kwargs.get("seed") or 0) - 10
        return unclip_adm(conditioning, device, self.noise_augmentor, kwargs.get("unclip_noise_augment_merge", 0.05),
                          seed)


class SD21UnclipL(SD20):
    unet_config = {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True,
                   "adm_in_channels": 1536, "use_temporal_attention": False}
    clip_vision_prefix = "embedder.model.visual."
    noise_aug_config = {"noise_schedule_config": {"timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
                        "timestep_dim": 768}
    family = "sd21_unclip_l"
    model_class = SD21UNCLIPModel


class SD21UnclipH(SD21UnclipL):
    unet_config = {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True,
                   "adm_in_channels": 2048, "use_temporal_attention": False}
    noise_aug_config = {"noise_schedule_config": {"timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
                        "timestep_dim": 1024}
    family = "sd21_unclip_h"
