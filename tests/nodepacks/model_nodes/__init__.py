"""A node pack that keeps a small torch model in the GPU scheduler, for /free tests."""

from __future__ import annotations


def _manager():
    from comfy_kernel.gpu import model_manager

    return model_manager()


def _loader(device):
    import torch

    torch.manual_seed(0)
    return torch.nn.Linear(64, 64).to(device)


class TestUseModel:
    """Loads (once) and runs a 64x64 linear model; returns its output's sum."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"

    def run(self, seed):
        import torch

        manager = _manager()
        handle = manager.register("tests/linear64", _loader, size=64 * 65 * 4)
        with manager.use(handle) as model:
            value = float(model(torch.full((1, 64), float(seed))).sum())
        return (value,)


class TestModelStates:
    """Output node: the scheduler's view of every model, as UI text."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"after": ("FLOAT", {"forceInput": True})}, "optional": {}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self, after):
        stats = _manager().stats()["models"]
        return {"ui": {"states": [f"{m['key']}={m['state']}:{m['loads']}" for m in stats]}}


class TestModelStatesOnly:
    """Output node with no inputs, so a prompt can look without loading anything."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def run(self):
        stats = _manager().stats()["models"]
        return {"ui": {"states": [f"{m['key']}={m['state']}:{m['loads']}" for m in stats]}}


NODE_CLASS_MAPPINGS = {"TestUseModel": TestUseModel, "TestModelStates": TestModelStates,
                       "TestModelStatesOnly": TestModelStatesOnly}
