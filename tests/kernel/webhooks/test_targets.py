"""Which webhook targets are allowed, and the POST itself against real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from comfy_kernel.webhooks.targets import TargetRefused, address_allowed, check_url, post


@pytest.mark.parametrize("address, allowed", [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True), ("127.0.0.1", False), ("10.0.0.1", False),
    ("172.16.5.4", False), ("192.168.1.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
    ("0.0.0.0", False), ("::1", False), ("fe80::1%eth0", False), ("fc00::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:8.8.8.8", True), ("224.0.0.1", False), ("not-an-ip", False),
])
def test_address_policy(address, allowed):
    assert address_allowed(address, False) is allowed
    assert address_allowed(address, True) is True


@pytest.mark.parametrize("url", ["https://hooks.example.com/x?y=1", "http://example.org:8080/", "https://8.8.8.8/"])
def test_good_urls(url):
    assert check_url(url, False) == url


@pytest.mark.parametrize("url", [
    "", None, 3, "ftp://example.com/", "example.com/hook", "http://", "https://u:p@example.com/",
    "http://example.com:99999/", "http://exa mple.com/", "http://example.com/\r\nX: y", "https://" + "a" * 3000,
    "http://localhost/", "http://LOCALHOST./", "http://x.localhost/", "http://127.0.0.1/", "http://[::1]/",
    "http://10.0.0.1/",
])
def test_bad_urls(url):
    with pytest.raises(TargetRefused):
        check_url(url, False)


def test_private_urls_pass_when_allowed():
    assert check_url("http://127.0.0.1:9/", True) == "http://127.0.0.1:9/"


class OneShot:
    """A socket server on loopback that answers each connection with ``reply`` (or nothing)."""

    def __init__(self, reply: bytes | None):
        self.reply = reply
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length")), b"0"))
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                if self.reply is not None:
                    conn.sendall(self.reply)
                else:
                    threading.Event().wait(3)


@pytest.mark.parametrize("reply, status, ok, permanent", [
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204, True, False),
    (b"HTTP/1.1 500 Oops\r\n\r\n", 500, False, False),
    (b"HTTP/1.0 410 Gone\r\n\r\n", 410, False, True),
    (b"garbage\r\n", None, False, False),
])
def test_post_reads_the_status(reply, status, ok, permanent):
    server = OneShot(reply)
    outcome = asyncio.run(post(f"http://127.0.0.1:{server.port}/in?x=1", b'{"a":1}', {"webhook-id": "m"},
                               allow_private=True, timeout=2))
    assert (outcome.status, outcome.ok, outcome.permanent) == (status, ok, permanent)
    request = server.requests[0]
    assert request.startswith(b"POST /in?x=1 HTTP/1.1\r\n") and request.endswith(b'{"a":1}')
    assert f"Host: 127.0.0.1:{server.port}".encode() in request and b"webhook-id: m" in request


def test_post_times_out_refuses_and_reports_connection_errors():
    silent = OneShot(None)
    outcome = asyncio.run(post(f"http://127.0.0.1:{silent.port}/", b"{}", {}, allow_private=True, timeout=0.3))
    assert outcome.status is None and "Timeout" in outcome.error
    refused = asyncio.run(post("http://127.0.0.1:9/", b"{}", {}, allow_private=False, timeout=1))
    assert refused.permanent and refused.status is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = asyncio.run(post(f"http://127.0.0.1:{port}/", b"{}", {}, allow_private=True, timeout=1))
    assert closed.status is None and not closed.permanent and closed.error
