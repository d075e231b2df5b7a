import pytest

from comfy_kernel.app import HostGuard, cache_control_for
from comfy_kernel.http import dumps


@pytest.mark.parametrize("host,origin,ok", [
    ("127.0.0.1:8188", "http://evil.com", False),
    ("127.0.0.1:8188", "http://127.0.0.1:8188", True),
    ("localhost:8188", "http://127.0.0.1:8188", False),
    ("127.0.0.1:8188", "http://127.0.0.1:9999", False),
    ("127.0.0.1", "http://127.0.0.1:9999", True),
    ("192.168.1.5:8188", "http://evil.com", False),
    ("127.0.0.1:8188", "null", False),  # sandboxed iframes, data: and file: pages
    ("127.0.0.1:8188", "", True),  # no Origin at all: not a cross-origin browser request
    ("[::1]:8188", "http://[::1]:8188", True),
])
def test_origin_table(host, origin, ok):
    assert HostGuard.origin_ok(host, origin) is ok


def test_host_allow_list():
    guard = HostGuard("127.0.0.1", ["comfy.lan"])
    assert guard.host_ok("127.0.0.1:8188") and guard.host_ok("localhost") and guard.host_ok("[::1]:1")
    assert guard.host_ok("comfy.lan:8188")
    assert not guard.host_ok("attacker.example:8188")
    assert not guard.host_ok("192.168.1.5:8188")
    wide = HostGuard("0.0.0.0,::", [])
    assert wide.host_ok("192.168.1.5:8188") and not wide.host_ok("rebind.example")


@pytest.mark.parametrize("path,status,value", [
    ("/x.js", 200, "no-cache"), ("/a/b.css", 404, "no-cache"),
    ("/templates/index.json", 200, "no-cache"), ("/templates/index.zh.json", 200, "no-cache"),
    ("/a.PNG", 200, "public, max-age=86400"), ("/a.webp", 404, "public, max-age=3600"),
    ("/a.jpg", 302, "no-cache"), ("/a.jpg", 304, None), ("/view", 200, None),
])
def test_cache_control_table(path, status, value):
    assert cache_control_for(path, status) == value


def test_dumps_handles_huge_integers():
    assert dumps({"max": 2**64 - 1, "min": -(2**64 - 1)}) == b'{"max":18446744073709551615,"min":-18446744073709551615}'


def test_feature_flags_of_two_plugins_merge_under_one_key():
    from comfy_kernel.kernel import _merged

    manager = {"manager": {"supports_v4": True, "supports_csrf_post": True}}
    other = {"assets": {"enabled": True}, "manager": {"supports_v4": False}}
    assert _merged(manager, other) == {"manager": {"supports_v4": False, "supports_csrf_post": True},
                                       "assets": {"enabled": True}}
    assert _merged({"a": 1}, 2) == 2


@pytest.mark.parametrize("host,accept,gzip", [
    ("192.168.1.5", "gzip, deflate, br", True), ("2001:db8::1", "GZIP", True),
    ("127.0.0.1", "gzip", False), ("127.0.0.2", "gzip", False), ("::1", "gzip", False),
    ("192.168.1.5", "br", False), ("192.168.1.5", "", False), (None, "gzip", False), ("testclient", "gzip", False),
])
def test_object_info_is_compressed_for_remote_clients_only(host, accept, gzip):
    from comfy_kernel.routes.nodes import wants_gzip

    assert wants_gzip(host, accept) is gzip


def test_object_info_gzip_is_kept_per_answer():
    import gzip as gz

    from comfy_kernel.nodes.info import ObjectInfoCache

    cache = ObjectInfoCache.__new__(ObjectInfoCache)
    cache._gzipped = None
    body = dumps({"Node": {"input": {"required": {}}}})
    assert cache.gzipped_now(body) is None
    packed = cache.gzipped(body)
    assert gz.decompress(packed) == body and cache.gzipped_now(body) is packed
    other = dumps({"Other": {}})
    assert cache.gzipped_now(other) is None and gz.decompress(cache.gzipped(other)) == other


def test_frontend_defined_widgets_are_converted():
    """CustomCombo's selected index is a widget the frontend adds; the API prompt carries it as ``index``."""
    from comfy_kernel.convert import convert_workflow

    info = {"CustomCombo": {"input": {"required": {"choice": ["COMBO", {"options": []}]}}, "input_order":
                            {"required": ["choice"]}, "output": ["STRING", "INT"], "output_node": False},
            "PreviewAny": {"input": {"required": {"source": ["*", {}]}}, "input_order": {"required": ["source"]},
                           "output": ["STRING"], "output_node": True}}
    workflow = {"nodes": [
        {"id": 1, "type": "CustomCombo", "mode": 0, "inputs": [], "outputs": [{"name": "INDEX", "links": [1]}],
         "widgets_values": ["screen", 1, "add", "screen", "soft", ""]},
        {"id": 2, "type": "PreviewAny", "mode": 0, "inputs": [{"name": "source", "link": 1}], "outputs": []}],
        "links": [[1, 1, 1, 2, 0, "INT"]]}
    result = convert_workflow(workflow, info)
    assert result.prompt["1"]["inputs"] == {"choice": "screen", "index": 1}
    assert not [w for w in result.warnings if "left over" in w]
