"""Run the app under uvicorn: bind, print the URL when ready, stop on signals."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
import threading
from argparse import Namespace
from collections.abc import Iterator

import uvicorn

from .app import NO_FRONTEND, build_app
from .kernel import Kernel
from .plugins import PluginHost

log = logging.getLogger(__name__)


def create_kernel(config: Namespace, host: PluginHost | None = None) -> Kernel:
    """Build and load a kernel with the execution engine attached."""
    kernel = Kernel(config, host=host)
    try:
        from .execution import attach as attach_executor
    except ImportError:
        attach_executor = None
    try:
        from .gpu import GpuConfig, configure

        configure(GpuConfig.from_args(config))
    except ImportError:
        pass
    kernel.load()
    if attach_executor is not None:
        attach_executor(kernel)
        from .webhooks import attach as attach_webhooks

        attach_webhooks(kernel)
    return kernel


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, kernel: Kernel, urls: list[str], quiet: bool, quick_exit: bool):
        super().__init__(config)
        self.kernel = kernel
        self.urls = urls
        self.quiet = quiet
        self.quick_exit = quick_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Turn SIGINT/SIGTERM into a graceful shutdown and a normal exit status.

        uvicorn re-raises the captured signal after shutting down, which makes
        the process die of that signal; a server stopped on purpose exits 0.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and not self.quiet:
            if self.kernel.web_root is not None:
                for url in self.urls:
                    print(f"To see the GUI go to: {url}", flush=True)
            else:
                print(NO_FRONTEND, flush=True)
                for url in self.urls:
                    print(f"The API is at: {url}", flush=True)
        if self.quick_exit:
            self.should_exit = True
        elif self.started:
            self.kernel.start_warmup()  # now that requests are answered


def _is_loopback(host: str) -> bool:
    """WebSocket compression only pays over a network: on loopback it is CPU on both ends for nothing."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(hosts: list[str], port: int) -> None:
    """Fail early, in one line, when an address cannot be listened on (port taken, no permission)."""
    import socket

    from .config import StartupError

    for h in hosts:
        family = socket.AF_INET6 if ":" in h else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((h, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {h} port {port}: {exc.strerror or exc}") from None


def run(config: Namespace, host: PluginHost | None = None) -> int:
    hosts = [h.strip() for h in (config.listen or "127.0.0.1").split(",") if h.strip()]
    check_listen(hosts, config.port)
    kernel = create_kernel(config, host)
    for record in kernel.host.failed():
        log.warning("plugin %s failed: %s", record.name, record.error)
    app = build_app(kernel)
    scheme = "https" if config.tls_keyfile and config.tls_certfile else "http"
    urls = []
    for h in hosts:
        shown = "127.0.0.1" if h == "0.0.0.0" else ("[::1]" if h == "::" else (f"[{h}]" if ":" in h else h))
        urls.append(f"{scheme}://{shown}:{config.port}")
    uv_config = uvicorn.Config(app, host=hosts[0] if len(hosts) == 1 else hosts[0], port=config.port,
                               log_level="warning", access_log=False, lifespan="on",
                               ssl_keyfile=config.tls_keyfile if scheme == "https" else None,
                               ssl_certfile=config.tls_certfile if scheme == "https" else None,
                               ws_max_size=int(kernel.max_upload_size),
                               ws_per_message_deflate=not all(_is_loopback(h) for h in hosts))
    server = _Server(uv_config, kernel, urls, config.dont_print_server, config.quick_test_for_ci)
    if len(hosts) > 1:
        import socket

        sockets = []
        for h in hosts:
            family = socket.AF_INET6 if ":" in h else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((h, config.port))
            sockets.append(sock)
        asyncio.run(server.serve(sockets=sockets))
    else:
        server.run()
    return 0 if server.started or config.quick_test_for_ci else 1


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
