"""Where a webhook may go, and the one POST that delivers it.

A server that POSTs to URLs its users choose must not become a way into its
own network: targets on loopback, private, link-local or otherwise
non-global addresses are refused unless the administrator starts the server
with ``--webhook-allow-private``. The check runs twice: on the URL when it is
given (IP literals and ``localhost`` names answer 400 at once), and on every
address the name resolves to at delivery time; the connection then goes to
the address that was checked, so a name that resolves differently a moment
later (DNS rebinding) cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
USER_AGENT = "comfy-kernel-webhooks/1"


class TargetRefused(ValueError):
    """A URL or address webhooks may not be sent to."""


def address_allowed(address: str, allow_private: bool) -> bool:
    if allow_private:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: object, allow_private: bool) -> str:
    """Validate a webhook URL; return it, or raise :class:`TargetRefused` saying why."""
    if not isinstance(url, str) or not url:
        raise TargetRefused("a webhook URL is a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"a webhook URL is at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("a webhook URL is http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("a webhook URL must not carry credentials; sign requests with the secret instead")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise TargetRefused("the webhook URL's port is not valid") from None
    if not host:
        raise TargetRefused("a webhook URL needs a host")
    if any(ch.isspace() for ch in url):
        raise TargetRefused("a webhook URL contains whitespace")
    if not allow_private:
        name = host.lower().rstrip(".")
        if name in LOCAL_NAMES or name.endswith(".localhost"):
            raise TargetRefused("webhooks to loopback addresses are not allowed on this server")
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            pass  # a name: checked again on every address it resolves to when delivering
        else:
            if not address_allowed(name, False):
                raise TargetRefused("webhooks to loopback or private addresses are not allowed on this server")
    return url


@dataclass
class Outcome:
    """One attempt: the HTTP status (None when no answer came), an error text, and whether to stop retrying."""

    status: int | None
    error: str | None
    duration_ms: int
    permanent: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool,
               timeout: float = 10.0) -> Outcome:
    """POST ``body`` to ``url`` (HTTP/1.1, one connection, no redirects) and read the status line."""
    started = time.monotonic()

    def done(status: int | None, error: str | None, permanent: bool = False) -> Outcome:
        return Outcome(status, error, int((time.monotonic() - started) * 1000), permanent)

    try:
        check_url(url, allow_private)
    except TargetRefused as exc:
        return done(None, str(exc), permanent=True)
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError) as exc:
        return done(None, f"could not resolve {host}: {exc}")
    addresses = [info[4][0] for info in infos]
    refused = [a for a in addresses if not address_allowed(a, allow_private)]
    if not addresses or refused:
        return done(None, f"{host} resolves to a loopback or private address; not allowed on this server",
                    permanent=True)
    context = ssl.create_default_context() if secure else None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    head = [f"POST {path} HTTP/1.1", f"Host: {netloc}", f"User-Agent: {USER_AGENT}",
            "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addresses[0], port, ssl=context, server_hostname=host if secure else None),
            timeout)
        writer.write(request)
        await asyncio.wait_for(writer.drain(), timeout)
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return done(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (OSError, TimeoutError, ssl.SSLError):
                pass
    fields = line.decode("latin-1").split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        return done(None, "the receiver did not answer with an HTTP status line")
    status = int(fields[1])
    return done(status, None if 200 <= status < 300 else f"HTTP {status}", permanent=status == 410)
