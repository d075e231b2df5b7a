"""The plugin host's hook lists: plugin order, hooks added when needed, failures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from comfy_kernel import hookimpl
from comfy_kernel.plugins import PluginHost


def plugin(name: str, calls: list[str], fail: bool = False) -> SimpleNamespace:
    @hookimpl
    def ck_prompt_queued(event):
        calls.append(name)
        if fail:
            raise RuntimeError(f"{name} broke")

    @hookimpl
    def ck_resolve_identity(request, kernel):
        return None if name != "b" else f"identity from {name}"

    return SimpleNamespace(ck_prompt_queued=ck_prompt_queued, ck_resolve_identity=ck_resolve_identity)


def extra(name: str, calls: list[str]) -> SimpleNamespace:
    def ck_prompt_queued(event):
        calls.append(name)

    def ck_node_executed(event):
        calls.append(name + " executed")

    return SimpleNamespace(ck_prompt_queued=ck_prompt_queued, ck_node_executed=ck_node_executed)


def host_with(calls: list[str], fail_b: bool = False) -> PluginHost:
    host = PluginHost()
    # discover() registers in reverse so that the first plugin is called first
    host.register("b", plugin("b", calls, fail=fail_b))
    host.register("a", plugin("a", calls))
    return host


def test_plugin_order_and_added_hooks():
    calls: list[str] = []
    host = host_with(calls)
    assert [i.plugin for i in host.impls("ck_prompt_queued")] == ["a", "b"]
    assert not host.implemented("ck_node_executed")
    b_extra, a_extra = extra("b+", calls), extra("a+", calls)
    host.add_hooks("b", b_extra)
    host.add_hooks("a", a_extra)
    host.add_hooks("a", a_extra)  # once only
    assert host.implemented("ck_node_executed")
    host.call_each("ck_prompt_queued", event={})
    assert calls == ["a", "a+", "b", "b+"]
    calls.clear()
    host.call_each("ck_node_executed", event={}, ignored="extra arguments are not passed")
    assert calls == ["a+ executed", "b+ executed"]
    host.remove_hooks(a_extra)
    assert [i.plugin for i in host.impls("ck_node_executed")] == ["b"]


def test_first_result_in_plugin_order():
    host = host_with([])
    assert host.first_result("ck_resolve_identity", request=None, kernel=None) == "identity from b"
    assert PluginHost().first_result("ck_resolve_identity", request=None, kernel=None) is None


def test_unknown_hook_is_refused():
    host = host_with([])
    with pytest.raises(ValueError):
        host.add_hooks("a", SimpleNamespace(ck_no_such_hook=lambda: None))


def test_a_failing_plugin_is_dropped_with_its_added_hooks():
    calls: list[str] = []
    host = host_with(calls, fail_b=True)
    host.add_hooks("b", extra("b+", calls))
    host.call_each("ck_prompt_queued", mark_failed=False, event={})
    assert calls == ["a", "b", "b+"] and host.records["b"].status == "loaded"
    calls.clear()
    host.call_each("ck_prompt_queued", event={})
    assert calls == ["a", "b"] and host.records["b"].status == "failed"
    calls.clear()
    host.call_each("ck_prompt_queued", event={})
    assert calls == ["a"]
    assert not host.implemented("ck_node_executed")
