"""TorchCompileModel: the diffusion model is compiled with torch.compile at its first evaluation and gives the
eager result.

A small convolutional network stands in for the UNet (built through the same
WeightsSource / BaseModel / ModelPatcher path as every family), so that
inductor's C++ compilation of the graph stays within a test's time on a CPU.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

# inductor compiles C++ for the CPU: about half a minute on an idle machine, far more on a busy one
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(4, 16, 3, padding=1)
        self.conv_out = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: Any = None, control: Any = None,
                transformer_options: Any = None, **kwargs: Any) -> torch.Tensor:
        h = F.silu(self.conv_in(x) + timesteps.float().view(-1, 1, 1, 1) * 1e-3)
        return self.conv_out(h)


def small_model() -> Any:
    from comfy_kernel_core_nodes.model import latent_formats
    from comfy_kernel_core_nodes.model.base import BaseModel, ModelType, WeightsSource
    from comfy_kernel_core_nodes.model.patcher import ModelPatcher

    torch.manual_seed(0)
    state = SmallNet().state_dict()

    def build(sd: dict[str, torch.Tensor]) -> nn.Module:
        net = SmallNet()
        net.load_state_dict(sd)
        return net

    weights = WeightsSource(key="test:small-net", read=lambda device: {k: v.clone() for k, v in state.items()},
                            build=build, keys=frozenset(state))
    config = SimpleNamespace(unet_config={}, latent_format=latent_formats.SD15, sampling_settings={},
                             memory_usage_factor=1.0)
    return ModelPatcher(BaseModel(config, ModelType.EPS, weights))


def run(model: Any) -> torch.Tensor:
    from comfy_kernel_core_nodes.nodes import custom_sampler as cs

    cond = [[torch.zeros(1, 1, 8), {}]]
    (sampler,) = cs.KSamplerSelect().get_sampler("euler")
    (sigmas,) = cs.KarrasScheduler().get_sigmas(3, 14.6, 0.03, 7.0)
    out, _ = cs.SamplerCustom().sample(model, True, 5, 1.0, cond, cond, sampler, sigmas,
                                       {"samples": torch.zeros(1, 4, 8, 8)})
    return out["samples"]


def test_torch_compile_model_compiles_with_inductor_and_matches_eager():
    from torch._dynamo.utils import counters

    from comfy_kernel_core_nodes.nodes.model_tools import TorchCompileModel
    from comfy_kernel_core_nodes.patches.compile import COMPILE_KEY, TORCH_COMPILE_KWARGS

    model = small_model()
    eager = run(model)
    (compiled,) = TorchCompileModel.execute(model, "inductor").args
    assert compiled.model_options[TORCH_COMPILE_KWARGS]["backend"] == "inductor"
    assert compiled.get_wrappers("apply_model", COMPILE_KEY) and not model.get_wrappers("apply_model", COMPILE_KEY)
    torch._dynamo.reset()
    counters.clear()
    result = run(compiled)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo traced and compiled the network
    torch.testing.assert_close(result, eager, rtol=1e-4, atol=1e-4)
    frames = counters["stats"]["calls_captured"]
    run(compiled)  # the second run reuses the compiled module of the loaded network
    assert counters["stats"]["unique_graphs"] == 1 and counters["stats"]["calls_captured"] == frames
