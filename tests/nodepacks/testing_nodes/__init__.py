"""A node pack for the executor's tests: plain-Python values, no torch.

Loaded into a test server by copying this folder into ``<base>/custom_nodes``
(see ``tests/e2e/execution_helpers.py``).
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

try:  # only TestOOM needs torch
    import torch
except ImportError:  # pragma: no cover
    torch = None

from comfy_kernel.nodes import io
from comfy_kernel.nodes.graph_utils import ExecutionBlocker, GraphBuilder
from comfy_kernel.nodes.types import IO
from comfy_kernel.progress import ProgressBar


class AnyType(str):
    def __ne__(self, other: object) -> bool:
        return False


ANY = AnyType("*")


class TestValue:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000000, "max": 1000000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "Testing"

    def run(self, value):
        return (value,)


class TestFloat:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"

    def run(self, value):
        return (value,)


class TestAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {}), "b": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a, b):
        return (a + b,)


class TestOutput:
    """Output node: shows its input as UI text."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY, {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"text": [repr(value)]}}


class TestIOAny:
    """Output node whose input is the built-in wildcard ``IO.ANY``: any value, passed through as given."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (IO.ANY, {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value):
        return {"ui": {"text": [repr(value)]}}


class TestListOutput:
    """Output node receiving whole lists."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY, {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    INPUT_IS_LIST = (True,)

    def run(self, value):
        return {"ui": {"values": [v if not isinstance(v, ExecutionBlocker) else "blocked" for v in value]}}


class TestLazyMix:
    """Returns ``a`` if ``use_a`` else ``b``; both lazy: only the chosen one runs."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"use_a": ("BOOLEAN", {"default": True}),
                             "a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def check_lazy_status(self, use_a, a=None, b=None):
        if use_a and a is None:
            return ["a"]
        if not use_a and b is None:
            return ["b"]
        return []

    def run(self, use_a, a=None, b=None):
        return (a if use_a else b,)


class TestError:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        raise ValueError(f"test error {value}")


class TestIsChanged:
    """IS_CHANGED returns ``change`` ("nan" → NaN, never equal)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "change": ("STRING", {"default": "same"})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, value=None, change=None, **kwargs):
        return float("nan") if change == "nan" else change

    def run(self, value, change):
        return (value,)


class TestCustomValidation:
    """VALIDATE_INPUTS rejects negative values with a message."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"min": 0, "max": 10})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        if value is not None and value < 0:
            return "value must not be negative"
        return True

    def run(self, value):
        return (value,)


class TestKwargsValidation:
    """A ``**kwargs`` VALIDATE_INPUTS disables min/max checks."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"min": 0.0, "max": 1.0})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        if kwargs.get("value") == 3.0:
            return "three is not allowed"
        return True

    def run(self, value):
        return (value,)


class TestInputTypes:
    """Judges link types itself (VALIDATE_INPUTS with ``input_types``): accepts FLOAT only."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("IMAGE,FLOAT", {})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        if input_types.get("value") not in (None, "FLOAT"):
            return f"bad type {input_types.get('value')}"
        return True

    def run(self, value):
        return (value,)


class TestCombo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"choice": (["a", "b", "c"],)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, choice):
        return (choice,)


class TestVariadic:
    """Sums undeclared linked inputs (passed as keyword arguments)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, **kwargs):
        return (sum(v for v in kwargs.values() if isinstance(v, int)),)


class TestSleep:
    """Async: sleeps ``seconds`` then passes ``value`` through."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "seconds": ("FLOAT", {"default": 0.1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value, seconds):
        await asyncio.sleep(seconds)
        return (value,)


class TestSyncSleep:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "seconds": ("FLOAT", {"default": 0.1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, seconds):
        time.sleep(seconds)
        return (value,)


class TestList:
    """Emits ``count`` items ``value, value+1, ...`` as a list."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "count": ("INT", {"default": 3})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, value, count):
        return ([value + i for i in range(count)],)


class TestBlockOdd:
    """Blocks odd items (silently, or with a message)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "message": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, message):
        if value % 2:
            return (ExecutionBlocker(message or None),)
        return (value,)


class TestProgress:
    """Reports ``steps`` progress updates; sleeps ``delay`` per step (interrupt point)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "steps": ("INT", {"default": 3}),
                             "delay": ("FLOAT", {"default": 0.0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, steps, delay):
        bar = ProgressBar(steps)
        for _ in range(steps):
            if delay:
                time.sleep(delay)
            bar.update(1)
        return (value,)


class TestExpandAdd:
    """Expands into a chain adding 1 ``times`` times (GraphBuilder)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "times": ("INT", {"default": 2})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, times):
        g = GraphBuilder()
        current = g.node("TestValue", value=value)
        for _ in range(times):
            one = g.node("TestValue", value=1)
            current = g.node("TestAdd", a=current.out(0), b=one.out(0))
        return {"result": (current.out(0),), "expand": g.finalize()}


class TestForLoop:
    """Counts down recursively by expansion: re-emits itself with ``remaining - 1``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"total": ("INT", {}), "remaining": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, total, remaining):
        if remaining <= 0:
            return (total,)
        g = GraphBuilder()
        add = g.node("TestAdd", a=total, b=1)
        again = g.node("TestForLoop", total=add.out(0), remaining=remaining - 1)
        return {"result": (again.out(0),), "expand": g.finalize()}


class TestExpandCycle:
    """Expands into two nodes that depend on each other (a dynamic cycle)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        g = GraphBuilder()
        a = g.node("TestAdd", id="a", b=value)
        b = g.node("TestAdd", id="b", a=a.out(0), b=value)
        a.set_input("a", b.out(0))
        return {"result": (b.out(0),), "expand": g.finalize()}


class TestMixedReturns:
    """Per list item: a tuple, a result dict, or an expansion."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value):
        if value % 3 == 0:
            return (value * 10,)
        if value % 3 == 1:
            return {"result": (value * 10,)}
        g = GraphBuilder()
        n = g.node("TestValue", value=value * 10)
        return {"result": (n.out(0),), "expand": g.finalize()}


class TestV3Add(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="TestV3Add", display_name="V3 add", category="Testing",
                         inputs=[io.Int.Input("a"), io.Int.Input("b", default=1, min=0, max=100)],
                         outputs=[io.Int.Output()], hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, a, b):
        assert cls.hidden.unique_id is not None
        return io.NodeOutput(a + b)


class TestV3Output(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="TestV3Output", inputs=[io.AnyType.Input("value")], is_output_node=True)

    @classmethod
    async def execute(cls, value):
        return io.NodeOutput(ui=io.ui.PreviewText(f"v3:{value}"))


class TestAutogrowSum(io.ComfyNode):
    """Autogrow by prefix: at least two ints, ``execute`` gets them as ``values={"value0": ...}``."""

    @classmethod
    def define_schema(cls):
        template = io.Autogrow.TemplatePrefix(io.Int.Input("value", min=0, max=100), prefix="value", min=2, max=4)
        return io.Schema(node_id="TestAutogrowSum", category="Testing",
                         inputs=[io.Autogrow.Input("values", template=template)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, values):
        return io.NodeOutput(f"{sorted(values.items())} sum={sum(values.values())}")


class TestAutogrowNames(io.ComfyNode):
    """Autogrow by names, all optional: nothing linked gives ``words={}``."""

    @classmethod
    def define_schema(cls):
        template = io.Autogrow.TemplateNames(io.String.Input("word"), names=["first", "second"], min=0)
        return io.Schema(node_id="TestAutogrowNames", category="Testing",
                         inputs=[io.Autogrow.Input("words", template=template), io.String.Input("sep", default=" ")],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, words, sep):
        return io.NodeOutput(f"{sorted(words.items())}{sep}")


class TestDynamicCombo(io.ComfyNode):
    """DynamicCombo: the selected option's inputs arrive with the key in ``mode``."""

    @classmethod
    def define_schema(cls):
        options = [io.DynamicCombo.Option("add", [io.Int.Input("a"), io.Int.Input("b", default=1, max=10)]),
                   io.DynamicCombo.Option("text", [io.String.Input("text", multiline=True)]),
                   io.DynamicCombo.Option("none", [])]
        return io.Schema(node_id="TestDynamicCombo", category="Testing",
                         inputs=[io.DynamicCombo.Input("mode", options=options), io.Int.Input("scale", default=1)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, mode, scale):
        return io.NodeOutput(f"{sorted(mode.items())} scale={scale}")


MATCH = io.MatchType.Template("T", allowed_types=[io.Int, io.String])


class TestMatchType(io.ComfyNode):
    """MatchType: the output has the type of whatever is linked to the input."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="TestMatchType", category="Testing",
                         inputs=[io.MatchType.Input("value", template=MATCH)],
                         outputs=[io.MatchType.Output(template=MATCH)])

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(value)


class TestMultiCombo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="TestMultiCombo", category="Testing",
                         inputs=[io.MultiCombo.Input("colors", options=["red", "green", "blue"], default=["red"],
                                                     placeholder="Pick colors", chip=True)],
                         outputs=[io.String.Output()])

    @classmethod
    def execute(cls, colors):
        return io.NodeOutput("+".join(colors))


class TestUniqueId:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, value, unique_id):
        return (f"{unique_id}:{value}",)


class Tracked:
    """A value whose lifetime the tests watch (through a weak reference)."""

    def __init__(self, value):
        self.value = value


TRACKED: dict[str, weakref.ref] = {}


class TestTracked:
    """Outputs a fresh ``Tracked`` object and remembers a weak reference to it under ``tag``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "tag": ("STRING", {"default": "t"})}}

    RETURN_TYPES = ("TRACKED",)
    FUNCTION = "run"

    def run(self, value, tag):
        obj = Tracked(value)
        TRACKED[tag] = weakref.ref(obj)
        return (obj,)


class TestUnwrap:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tracked": ("TRACKED", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, tracked):
        return (tracked.value,)


class TestAlive:
    """Runs after ``after``; says whether the object recorded under ``tag`` still exists."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"after": (ANY, {}), "tag": ("STRING", {"default": "t"})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, after, tag):
        gc.collect()
        ref = TRACKED.get(tag)
        return ("alive" if ref is not None and ref() is not None else "released",)


class TestAsyncError:
    """Async: sleeps ``seconds`` then raises."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "seconds": ("FLOAT", {"default": 0.1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    async def run(self, value, seconds):
        await asyncio.sleep(seconds)
        raise RuntimeError(f"async test error {value}")


class TestExpandSleep:
    """Expands into ``count`` async sleeps of ``seconds`` each, summed by a chain of adds."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3}), "seconds": ("FLOAT", {"default": 0.5})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, count, seconds):
        g = GraphBuilder()
        total = g.node("TestValue", value=0)
        for i in range(count):
            sleep = g.node("TestSleep", value=i + 1, seconds=seconds)
            total = g.node("TestAdd", a=total.out(0), b=sleep.out(0))
        return {"result": (total.out(0),), "expand": g.finalize()}


class TestBoolList:
    """Emits the booleans of ``pattern`` ("TFT" → True, False, True) as a list."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pattern": ("STRING", {"default": "TF"})}}

    RETURN_TYPES = ("BOOLEAN",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    def run(self, pattern):
        return ([c == "T" for c in pattern],)


OOM_MODEL_KEY = "testing-nodes-oom-model"


def _oom_model_handle():
    from comfy_kernel import gpu

    manager = gpu.model_manager()
    return manager, manager.register(OOM_MODEL_KEY, lambda device: torch.nn.Linear(2, 2).to(device), device="cpu")


class TestOOM:
    """Loads a small model through the model manager, then raises an out-of-memory error.

    ``kind``: "torch" raises ``torch.cuda.OutOfMemoryError``; "kernel" the manager's ``OutOfMemory``.
    """

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "kind": (["torch", "kernel"],)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value, kind):
        manager, handle = _oom_model_handle()
        manager.load(handle)
        if not handle.loaded:
            raise AssertionError("the test model did not load")
        if kind == "torch":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        from comfy_kernel.gpu.memory import OutOfMemory

        raise OutOfMemory("model fits neither on its device nor in the offload tier")


class TestOOMModelLoaded:
    """Says whether TestOOM's model is still loaded ("loaded" / "unloaded")."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    def run(self, value):
        _manager, handle = _oom_model_handle()
        return ("loaded" if handle.loaded else "unloaded",)


class TestModuleLoaded:
    """Says whether module ``name`` is imported in the server process ("yes" / "no")."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, name):
        return float("nan")

    def run(self, name):
        import sys

        module = sys.modules.get(name)
        loaded = module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)
        return ("yes" if loaded else "no",)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in [
    TestValue, TestFloat, TestAdd, TestOutput, TestIOAny, TestListOutput, TestLazyMix, TestError, TestIsChanged,
    TestCustomValidation, TestKwargsValidation, TestInputTypes, TestCombo, TestVariadic, TestSleep,
    TestSyncSleep, TestList, TestBlockOdd, TestProgress, TestExpandAdd, TestForLoop, TestExpandCycle,
    TestMixedReturns, TestV3Add, TestV3Output, TestAutogrowSum, TestAutogrowNames, TestDynamicCombo, TestMatchType,
    TestMultiCombo, TestUniqueId, TestTracked, TestUnwrap, TestAlive,
    TestAsyncError, TestExpandSleep, TestBoolList, TestOOM, TestOOMModelLoaded, TestModuleLoaded]}
