"""Initial latent noise and the per-step noise of stochastic samplers.

Both must be reproducible from the seed alone, with the exact random streams of
the reference (torch's CPU generator; torchsde's Brownian tree for SDE solvers),
so that a seed gives the same image here as there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """N(0, 1) noise of the latent's shape from the global CPU generator seeded with ``seed``.

    Batch items are consecutive draws of one stream. With a ``batch_index``
    (latents split from a larger batch) one item-sized draw is made per index up
    to the largest and the listed ones are picked, so an item keeps the noise it
    had in the full batch. The parts of a nested latent (LTX-2's video + audio)
    draw one after the other from the same stream.
    """
    from ..model.nested import NestedTensor, is_nested

    generator = torch.manual_seed(seed)
    if is_nested(latent):
        return NestedTensor(_draw(part, generator, batch_index) for part in latent.unbind())
    return _draw(latent, generator, batch_index)


def _draw(latent: torch.Tensor, generator: torch.Generator, batch_index: Sequence[int] | None) -> torch.Tensor:
    if batch_index is None:
        return torch.randn(
            latent.size(), dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu"
        )
    unique, inverse = np.unique(np.asarray(batch_index), return_inverse=True)
    wanted = set(int(i) for i in unique)
    drawn = []
    for i in range(int(unique[-1]) + 1):
        item = torch.randn(
            [1, *latent.shape[1:]],
            dtype=latent.dtype,
            layout=latent.layout,
            generator=generator,
            device="cpu",
        )
        if i in wanted:
            drawn.append(item)
    return torch.cat([drawn[int(i)] for i in np.asarray(inverse).reshape(-1)], dim=0)


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> NoiseSampler:
    """Fresh N(0, 1) draws of x's shape per call, from a private generator seeded with ``seed``.

    Seeded like the initial noise, so the first draw repeats it (as the reference does).
    """
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)

    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.size(), dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return sample


class BrownianTreeNoiseSampler:
    """Noise from a Brownian motion W(sigma) sampled with torchsde's BrownianTree.

    Returns (W(s1) - W(s0)) / sqrt(|s1 - s0|): unit-variance noise whose
    increments stay consistent whatever step sizes the solver takes. The tree
    spans [sigma_min, sigma_max] with sigma as time, entropy = seed; ``cpu``
    keeps the tree on the CPU so results do not depend on the device.
    """

    def __init__(
        self, x: torch.Tensor, sigma_min, sigma_max, seed: int | None = None, cpu: bool = True
    ) -> None:
        import torchsde

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        t0, t1, self._sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, ()).item())
        w0 = torch.zeros_like(x)
        self._cpu = cpu
        if cpu:
            t0, t1, w0 = t0.detach().cpu(), t1.detach().cpu(), w0.detach().cpu()
        self._tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def increment(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        s0, s1 = torch.as_tensor(s0), torch.as_tensor(s1)
        a, b, sign = (s0, s1, 1) if s0 < s1 else (s1, s0, -1)
        device, dtype = a.device, a.dtype
        if self._cpu:
            a, b = a.detach().cpu().float(), b.detach().cpu().float()
        with warnings.catch_warnings():
            # float32 sigma_max lands a rounding error outside the tree's span; harmless.
            warnings.filterwarnings("ignore", message="Should have", category=UserWarning)
            w = self._tree(a, b)
        return w.to(device=device, dtype=dtype) * (self._sign * sign)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        s0, s1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        return self.increment(s0, s1) / (s1 - s0).abs().sqrt()


def brownian_noise_sampler(
    x: torch.Tensor, sigmas: torch.Tensor, seed: int | None, cpu: bool = True
) -> BrownianTreeNoiseSampler:
    """The tree the SDE samplers use: between the smallest non-zero and the largest sigma."""
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed, cpu=cpu)
