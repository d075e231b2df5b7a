"""The memory manager's policy on a CPU "device" with simulated budgets."""

import threading

import pytest
import torch
from safetensors.torch import save_file

from comfy_kernel.gpu import GpuConfig, ModelManager, OutOfMemory
from comfy_kernel.gpu.memory import DEVICE, DISK, OFFLOAD, STREAMED, module_size

MB = 1024**2
LAYER = 1 * MB  # one fp32 256x1024 linear weight


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1024, 256, bias=False), torch.nn.Linear(256, 1024, bias=False))


SIZE = module_size(make_model())  # 2 MB


class Loader:
    """Counts loads so tests can prove a model is not loaded twice."""

    def __init__(self, seed=0):
        self.seed = seed
        self.calls = []

    def __call__(self, device):
        self.calls.append(device)
        return make_model(self.seed).to(device)


def manager(device_mb, offload_mb=None, **kw):
    offload = {} if offload_mb is None else {"offload_budget": offload_mb * MB}
    return ModelManager("cpu", budgets={"cpu": device_mb * MB}, **offload, **kw)


def register(m, name, size=SIZE):
    return m.register(name, Loader(), size=size)


def test_same_key_gives_same_handle_and_one_load():
    m = manager(10)
    a, b = register(m, "a"), register(m, "a")
    assert a is b
    with m.use(a) as first, m.use(b) as second:
        assert first is second
    with m.use(a):
        pass
    assert a.loads == 1 and a.state == DEVICE


def test_lru_eviction_order():
    m = manager(5, offload_mb=100)  # room for two 2 MB models on the device
    a, b, c = (register(m, n) for n in "abc")
    with m.use(a):
        pass
    with m.use(b):
        pass
    with m.use(a):  # a is now more recent than b
        pass
    with m.use(c):
        pass
    assert (a.state, b.state, c.state) == (DEVICE, OFFLOAD, DEVICE)


def test_pinned_model_is_never_evicted():
    m = manager(5, offload_mb=100)
    a, b, c = (register(m, n) for n in "abc")
    with m.use(a):
        with m.use(b):
            pass
        with m.use(c):  # b is the only unpinned victim
            assert a.state == DEVICE and b.state == OFFLOAD
        assert m.free_memory() == SIZE  # c is evicted, a (pinned) stays
        assert a.state == DEVICE and c.state == OFFLOAD
    assert m.unload_all() == 3
    assert {h.state for h in (a, b, c)} == {DISK}


def test_offload_to_host_then_drop_to_disk_when_host_is_short():
    m = manager(3, offload_mb=3)  # one model on the device, one on the host
    a, b, c = (register(m, n) for n in "abc")
    for h in (a, b, c):
        with m.use(h):
            pass
    assert (a.state, b.state, c.state) == (DISK, OFFLOAD, DEVICE)
    assert a.model is None


def test_no_offload_tier_drops_straight_to_disk():
    m = ModelManager("cpu", budgets={"cpu": 3 * MB}, offload_device=None)
    a, b = register(m, "a"), register(m, "b")
    with m.use(a):
        pass
    with m.use(b):
        pass
    assert a.state == DISK and b.state == DEVICE


def test_reload_after_drop_from_a_safetensors_file(tmp_path):
    path = tmp_path / "m.safetensors"
    reference = make_model(3)
    save_file({f"first.{k}": v for k, v in reference.state_dict().items()}, str(path))

    def build(sd):
        model = torch.nn.Sequential(torch.nn.Linear(1024, 256, bias=False), torch.nn.Linear(256, 1024, bias=False))
        model.load_state_dict(sd, assign=True)
        return model

    m = ModelManager("cpu", budgets={"cpu": 3 * MB}, offload_device=None)
    handle = m.register_file(path, build, prefix="first.")
    assert handle.size == SIZE
    assert m.register_file(path, build, prefix="first.") is handle
    x = torch.randn(4, 1024)
    with m.use(handle) as model:
        expected = model(x)
    assert torch.equal(expected, reference(x))
    assert m.unload_all() == 1 and handle.state == DISK
    with m.use(handle) as model:
        assert torch.equal(model(x), expected)
    assert handle.loads == 2


def test_unknown_size_is_measured():
    m = manager(10, offload_mb=100)
    h = m.register("a", Loader())
    with m.use(h):
        pass
    assert h.size == SIZE and h.state == DEVICE


def test_streams_when_too_big_and_gives_the_same_output():
    m = manager(1, offload_mb=100)  # the device holds half a model
    h = register(m, "big")
    x = torch.randn(3, 1024)
    expected = make_model()(x)
    with m.use(h) as model:
        assert h.state == STREAMED
        assert torch.allclose(model(x), expected)
        assert h.streamer.moves == 2
    m.budgets["cpu"] = 10 * MB  # room appears: the next use loads it fully
    with m.use(h) as model:
        assert h.state == DEVICE and h.streamer is None
        assert torch.allclose(model(x), expected)


def test_nothing_is_evicted_for_a_model_that_cannot_fit_anyway():
    m = manager(3, offload_mb=100)
    small = register(m, "small")
    big = register(m, "big", size=5 * MB)
    big.loader = lambda device: torch.nn.Sequential(*[make_model() for _ in range(2)])  # 4 MB, says 5
    with m.use(small):
        pass
    with m.use(big):
        assert big.state == STREAMED and small.state == DEVICE


def test_novram_always_streams():
    m = ModelManager("cpu", budgets={"cpu": 100 * MB}, config=GpuConfig(vram_mode="no"))
    h = register(m, "a")
    with m.use(h):
        assert h.state == STREAMED


def test_out_of_memory_when_nothing_fits():
    m = manager(1, offload_mb=1)
    h = register(m, "big")
    with pytest.raises(OutOfMemory):
        with m.use(h):
            pass
    assert h.pins == 0


def test_free_memory_only_what_is_needed():
    m = manager(10, offload_mb=100)
    hs = [register(m, n) for n in "abcd"]
    for h in hs:
        with m.use(h):
            pass
    m.free_memory(needed=5 * MB)  # 8 MB used of 10: two LRU models go
    assert [h.state for h in hs] == [OFFLOAD, OFFLOAD, DEVICE, DEVICE]


def test_models_per_device_are_separate():
    m = ModelManager(budgets={"cpu": 10 * MB, "meta": 10 * MB})
    loader = Loader()
    assert m.register("a", loader, size=SIZE, device="cpu") is not m.register("a", loader, size=SIZE, device="meta")


def test_threads_share_one_load():
    m = manager(10, offload_mb=100)
    loader = Loader()
    handles, errors = [], []

    def work():
        try:
            h = m.register("shared", loader, size=SIZE)
            handles.append(h)
            with m.use(h) as model:
                model(torch.randn(1, 1024))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(map(id, handles))) == 1 and len(loader.calls) == 1


def test_a_slow_load_does_not_block_other_models():
    m = manager(10, offload_mb=100)
    ready = register(m, "ready")
    with m.use(ready):
        pass
    started, release = threading.Event(), threading.Event()

    def slow_loader(device):
        started.set()
        release.wait(5)
        return make_model().to(device)

    slow = m.register("slow", slow_loader, size=SIZE)
    second_user = []
    loaders = [threading.Thread(target=lambda: m.load(slow)) for _ in range(2)]
    loaders[0].start()
    assert started.wait(5)
    loaders[1].start()  # waits for the first load of the same model
    with m.use(ready) as model:  # not blocked by the load in progress
        second_user.append(model)
    assert slow.busy and slow.state == DEVICE  # booked before the copy finished
    release.set()
    for t in loaders:
        t.join(5)
    assert second_user and slow.loads == 1 and not slow.busy


def test_a_failed_load_leaves_the_model_on_disk():
    m = manager(10)

    def broken(device):
        raise OSError("file vanished")

    h = m.register("broken", broken, size=SIZE)
    with pytest.raises(OSError):
        m.load(h)
    assert h.state == DISK and h.pins == 0 and not h.busy
