import pytest
import torch

from comfy_kernel.gpu.streaming import WeightStreamer


def conv_net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
                               torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4)).eval()


def test_streamed_output_matches_and_weights_return_to_host():
    model = conv_net()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    hosts = [p.data_ptr() for p in model.parameters()]
    streamer = WeightStreamer(model, "cpu").attach()
    assert streamer.attached
    with torch.no_grad():
        assert torch.allclose(model(x), expected)
    assert streamer.moves == 4  # two convs, the group norm, the batch norm (buffers)
    assert [p.data_ptr() for p in model.parameters()] == hosts
    streamer.detach()
    assert not streamer.attached


def test_weights_return_even_when_a_layer_fails():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    host = model[0].weight.data_ptr()
    WeightStreamer(model, "cpu").attach()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5))
    assert model[0].weight.data_ptr() == host and "_comfy_streamed" not in model[0].__dict__


def test_explicit_units():
    model = conv_net()
    x = torch.randn(1, 3, 8, 8)
    expected = model(x)
    streamer = WeightStreamer(model, "cpu", units=[model]).attach()
    assert torch.allclose(model(x), expected) and streamer.moves == 1


class Probe(torch.nn.Module):
    """Records where its weight is while it runs."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.seen = []

    def forward(self, x):
        self.seen.append(self.weight.device.type)
        return x


def test_weights_sit_on_the_device_only_while_their_layer_runs():
    model = torch.nn.Sequential(Probe(), Probe())
    host = [p.data_ptr() for p in model.parameters()]
    WeightStreamer(model, "meta").attach()  # "meta" stands in for a GPU: a different device
    model(torch.zeros(1))
    assert [m.seen for m in model] == [["meta"], ["meta"]]
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert [p.data_ptr() for p in model.parameters()] == host
