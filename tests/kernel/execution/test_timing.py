"""Per-node timings a run reports to ``ck_prompt_finished`` (metering)."""

from __future__ import annotations

import time

import pytest

from comfy_kernel.execution.timing import NodeTimes
from comfy_kernel.gpu.devices import DeviceInfo


def test_spans_accumulate_and_report_is_lazy():
    times = NodeTimes(None)
    for _ in range(2):  # a node staged twice (lazy inputs) adds both spans
        mark = times.begin()
        time.sleep(0.02)
        times.end("5", mark)
    mark = times.begin()
    times.end("6", mark)
    calls = []

    def class_of(node_id):
        calls.append(node_id)
        return "Sleep" if node_id == "5" else "Out"

    report = times.report(class_of, cached={"6"})
    assert len(report) == 2 and calls == []  # nothing built until read
    assert report["5"]["class_type"] == "Sleep" and 0.04 <= report["5"]["wall_s"] < 0.5
    assert report["5"]["busy_s"] == report["5"]["wall_s"] and not report["5"]["cached"]
    assert report["6"]["cached"] and dict(report)["6"]["class_type"] == "Out"


def test_cpu_device_uses_host_time():
    times = NodeTimes(DeviceInfo("cpu"))
    assert times.events is None
    mark = times.begin()
    times.end("1", mark)
    assert times.device_seconds() is None


@pytest.mark.cuda
def test_cuda_device_time_counts_queued_kernels():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    times = NodeTimes(DeviceInfo("cuda", 0, torch.cuda.get_device_name(0)))
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    mark = times.begin()
    for _ in range(20):
        a = a @ a  # queued; the host returns at once
        a = a / a.norm()
    times.end("matmul", mark)
    mark = times.begin()
    times.end("idle", mark)
    report = times.report(lambda n: n, set())
    # The queued work belongs to the node that queued it, on the device's clock.
    assert report["matmul"]["busy_s"] > report["matmul"]["wall_s"]
    assert report["idle"]["busy_s"] < report["matmul"]["busy_s"]
