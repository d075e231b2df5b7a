"""serve --compile: which evaluations take the compiled network, and that it computes what eager does."""

from __future__ import annotations

import pytest
import torch

from comfy_kernel_core_nodes.model import compiled


@pytest.fixture
def compiling():
    compiled.configure(True)
    yield
    compiled.configure(False)


def test_off_by_default_gives_the_eager_network():
    net = torch.nn.Linear(4, 4)
    assert not compiled.enabled()
    assert compiled.network_for(net, {}, None, {}) is None


def test_patched_or_controlled_evaluations_stay_eager(compiling):
    net = torch.nn.Linear(4, 4)
    assert compiled.network_for(net, {"patches": {"attn1_patch": [print]}}, None, {}) is None
    assert compiled.network_for(net, {"patches_replace": {"attn1": {("input", 1): print}}}, None, {}) is None
    assert compiled.network_for(net, {"wrappers": {"diffusion_model": {"pack": [print]}}}, None, {}) is None
    assert compiled.network_for(net, {}, object(), {}) is None
    assert compiled.network_for(net, {}, None, {"extra": "not a tensor"}) is None


def test_one_compiled_function_per_module(compiling):
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    options = {"patches": {}, "wrappers": {"diffusion_model": {}}, "sigmas": torch.ones(1)}
    fa = compiled.network_for(a, options, None, {"y": torch.ones(1)})
    assert fa is not None
    assert compiled.network_for(a, {}, None, {}) is fa
    assert compiled.network_for(b, {}, None, {}) is not fa


@pytest.mark.slow
def test_compiled_network_matches_eager(compiling):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GroupNorm(4, 8), torch.nn.SiLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1))
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        fn = compiled.network_for(net, {}, None, {})
        torch.testing.assert_close(fn(x), net(x), rtol=1e-5, atol=1e-5)


def test_the_compiled_function_does_not_keep_its_module_alive(compiling):
    import gc
    import weakref

    net = torch.nn.Linear(4, 4)
    compiled.network_for(net, {}, None, {})
    assert list(net.children()) == [] and set(net.state_dict()) == {"weight", "bias"}
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


def test_serve_compile_takes_an_optional_mode():
    from comfy_kernel.cli import build_parser
    from comfy_kernel.plugins import PluginHost

    host = PluginHost(disabled={"userdata", "manager", "assets", "hub", "multiuser", "compat", "billing", "cluster"})
    host.discover()
    parser = build_parser(host)
    assert parser.parse_args(["serve"]).compile is None
    assert parser.parse_args(["serve", "--compile"]).compile == "default"
    assert parser.parse_args(["serve", "--compile", "max-autotune", "--port", "1"]).compile == "max-autotune"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--compile", "fastest"])


@pytest.mark.slow
def test_max_autotune_matches_eager():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
    x = torch.randn(16, 64)
    compiled.configure(True, "max-autotune")
    try:
        with torch.inference_mode():
            fn = compiled.network_for(net, {}, None, {})
            torch.testing.assert_close(fn(x), net(x), rtol=1e-5, atol=1e-5)
    finally:
        compiled.configure(False)
