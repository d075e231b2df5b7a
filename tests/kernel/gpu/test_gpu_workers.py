import asyncio
import threading

import pytest

from comfy_kernel.gpu import GpuConfig, ThreadWorker, Worker, current_device, device_scope, worker_devices
from comfy_kernel.gpu.devices import DeviceInfo
from comfy_kernel.gpu.workers import set_default_device


def test_current_device_defaults_and_scopes():
    set_default_device(None)
    assert current_device().type in ("cpu", "cuda", "mps", "xpu")
    other = DeviceInfo("cuda", 3, "test")
    with device_scope(other):
        assert current_device() is other
    assert current_device() is not other


async def test_two_cpu_workers_run_items_on_their_device_in_parallel():
    barrier = threading.Barrier(2, timeout=5)

    def run(item):
        barrier.wait()  # both workers must be inside run() at once
        return item, current_device(), threading.current_thread().name

    devices = worker_devices(GpuConfig(cpu=True, workers=2))
    workers = [ThreadWorker(dev, run, name=f"w{i}") for i, dev in enumerate(devices)]
    assert all(isinstance(w, Worker) for w in workers)
    for w in workers:
        await w.start()
    results = await asyncio.gather(*(w.submit(i) for i, w in enumerate(workers)))
    assert [r[0] for r in results] == [0, 1]
    assert {r[2] for r in results} == {"w0", "w1"}
    assert all(r[1].type == "cpu" for r in results)
    assert workers[0].info()["device"] == "cpu" and not workers[0].info()["busy"]
    for w in workers:
        await w.stop()


async def test_errors_reach_the_caller_and_queued_items_can_be_cancelled():
    gate = threading.Event()
    interrupted = []

    def run(item):
        if item == "slow":
            gate.wait(5)
        if item == "boom":
            raise ValueError("boom")
        return item

    worker = ThreadWorker(DeviceInfo("cpu", None, "cpu"), run, interrupt=interrupted.append)
    await worker.start()
    slow = worker.submit("slow")
    queued = worker.submit("queued")
    boom = worker.submit("boom")
    await asyncio.sleep(0.05)
    assert worker.cancel("queued")
    assert worker.cancel("slow") and interrupted == ["slow"]
    gate.set()
    assert await slow == "slow"
    with pytest.raises(asyncio.CancelledError):
        await queued
    with pytest.raises(ValueError):
        await boom
    assert not worker.cancel("nothing")
    await worker.stop()


def test_more_workers_than_gpus_share_round_robin(monkeypatch):
    from comfy_kernel.gpu import workers

    gpus = [DeviceInfo("cuda", 0, "a"), DeviceInfo("cuda", 1, "b")]
    monkeypatch.setattr(workers, "discover_devices", lambda config: gpus)
    assert worker_devices(GpuConfig()) == gpus
    assert worker_devices(GpuConfig(workers=1)) == gpus[:1]
    assert [d.index for d in worker_devices(GpuConfig(workers=3))] == [0, 1, 0]


async def test_async_run_functions_run_on_the_worker_thread():
    async def run(item):
        await asyncio.sleep(0)
        return item * 2, current_device().type

    worker = ThreadWorker(DeviceInfo("cpu", None, "cpu"), run)
    await worker.start()
    assert await worker.submit(21) == (42, "cpu")
    await worker.stop()


def test_configure_sets_the_default_device_and_manager():
    import comfy_kernel.gpu as gpu

    gpu.configure(GpuConfig(cpu=True))
    try:
        assert current_device().type == "cpu"
        manager = gpu.model_manager()
        assert manager is gpu.model_manager() and manager.offload_device is None
    finally:
        gpu.configure(GpuConfig())
