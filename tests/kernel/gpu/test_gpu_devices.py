import argparse

import pytest

from comfy_kernel.gpu import GpuConfig, add_arguments, discover_devices, system_stats_devices, worker_devices
from comfy_kernel.gpu.devices import DeviceInfo, memory_stats, parse_device, ram_stats


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return GpuConfig.from_args(parser.parse_args(list(argv)))


def test_cpu_flag_gives_the_cpu_alone():
    assert discover_devices(GpuConfig(cpu=True)) == [DeviceInfo("cpu", None, "cpu")]


def test_system_stats_devices_shape_on_cpu():
    devices = system_stats_devices(GpuConfig(cpu=True))
    assert len(devices) == 1
    entry = devices[0]
    assert list(entry) == ["name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"]
    assert entry["name"] == "cpu" and entry["type"] == "cpu" and entry["index"] is None
    ram = ram_stats()
    assert entry["vram_total"] == entry["torch_vram_total"] == ram.total
    assert 0 < entry["vram_free"] <= entry["vram_total"]
    assert entry["torch_vram_free"] == entry["vram_free"]
    assert all(isinstance(entry[k], int) for k in ("vram_total", "vram_free", "torch_vram_total", "torch_vram_free"))


def test_mps_reports_ram_figures():
    mem = memory_stats("mps")
    assert mem.total == ram_stats().total and mem.torch_total == mem.total


def test_parse_device():
    assert parse_device("cuda") == DeviceInfo("cuda", 0, "cuda")
    assert parse_device("cuda:1").torch_device == "cuda:1"
    assert parse_device("cpu").index is None


def test_flags_parse_to_config():
    cfg = parse("--cpu", "--lowvram", "--reserve-vram", "1.5", "--cuda-device", "0,1", "--workers", "2")
    assert cfg.cpu and cfg.vram_mode == "low" and cfg.workers == 2
    assert cfg.cuda_devices == (0, 1) and cfg.reserve_bytes == int(1.5 * 1024**3)
    assert parse().vram_mode == "normal"
    assert parse("--novram").vram_mode == "no" and parse("--gpu-only").vram_mode == "gpu-only"
    assert parse("--highvram").vram_mode == "high"


def test_exclusive_flags_are_refused():
    with pytest.raises(SystemExit):
        parse("--lowvram", "--highvram")
    with pytest.raises(SystemExit):
        parse("--fp16-vae", "--fp32-vae")


def test_add_arguments_tolerates_an_existing_cpu_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true")
    add_arguments(parser)
    add_arguments(parser)
    assert parser.parse_args(["--cpu", "--fp16-unet"]).fp16_unet


def test_worker_devices():
    assert worker_devices(GpuConfig(cpu=True)) == [DeviceInfo("cpu", None, "cpu")]
    two = worker_devices(parse("--cpu", "--workers", "2"))
    assert [d.type for d in two] == ["cpu", "cpu"]
