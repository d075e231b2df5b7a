"""``comfy_kernel.client`` against a real server: queue, wait, stream, download, typed errors; sync and async."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from comfy_kernel.client import (
    AsyncComfyClient,
    ComfyClient,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    NotFound,
    PromptValidationError,
    WaitTimeout,
)

from .integration_helpers import failing_prompt, image_prompt, sleep_prompt, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("client"))
    yield srv
    srv.stop()
    srv.client.close()


@pytest.fixture
def client(server):
    with ComfyClient(server.url) as c:
        yield c


def test_run_and_download(client, server, tmp_path):
    result = client.run(image_prompt(60))
    assert result.ok and result.status == "completed"
    [file] = result.files
    assert (file.node_id, file.kind, file.subfolder, file.type) == ("3", "images", "tests", "output")
    data = client.download(file)
    assert data == server.get("/view", params=file.params()).content and data[:4] == b"\x89PNG"
    path = client.download(file, tmp_path)
    assert path == tmp_path / "tests" / file.filename and path.read_bytes() == data
    assert result.timings["execution_seconds"] >= 0


def test_queue_stream_and_wait(client):
    job = client.queue(image_prompt(61, steps=3, delay=0.1))
    events = list(client.stream(job.prompt_id))
    kinds = [e.type for e in events]
    assert kinds[0] == "execution_start" and events[-1].final
    assert kinds.count("preview") == 3 and "executed" in kinds
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert client.wait(job.prompt_id).ok
    # Reading the stream again after the end replays it; resuming after the last id gives nothing.
    assert [e.type for e in client.stream(job.prompt_id)] == kinds
    assert list(client.stream(job.prompt_id, last_event_id=events[-1].id)) == []


def test_typed_errors(client):
    with pytest.raises(PromptValidationError) as refused:
        client.queue({"1": {"class_type": "TestValue", "inputs": {}}, "2": {"class_type": "TestOutput", "inputs": {"value": ["1", 0]}}})
    assert refused.value.status == 400 and "1" in refused.value.node_errors or "2" in refused.value.node_errors
    with pytest.raises(JobFailed) as failed:
        client.run(failing_prompt())
    assert failed.value.result.execution_error["node_id"] == "2"
    assert client.run(failing_prompt(), raise_on_error=False).status == "failed"
    with pytest.raises(NotFound):
        client.wait("no-such-job")
    with pytest.raises(WaitTimeout) as slow:
        client.run(sleep_prompt(2.0), timeout=0.3)
    assert slow.value.status in ("pending", "in_progress")
    assert client.wait(slow.value.prompt_id, timeout=30).ok
    with pytest.raises(ConnectionFailed), ComfyClient(f"http://127.0.0.1:{_closed_port()}") as nowhere:
        nowhere.run(image_prompt(1))


def test_cancel_a_pending_job(client):
    blocker = client.queue(sleep_prompt(1.0))
    pending = client.queue(image_prompt(62))
    assert client.cancel(pending.prompt_id) is True
    with pytest.raises(JobCancelled):
        client.wait(pending.prompt_id)
    assert client.wait(blocker.prompt_id).ok
    assert client.cancel(blocker.prompt_id) is False


def test_upload_image(client, tmp_path):
    from PIL import Image

    source = tmp_path / "upload me.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(source)
    answer = client.upload_image(source, overwrite=True)
    assert answer["name"] == "upload me.png" and answer["type"] == "input"


def test_stream_resumes_after_a_dropped_connection(server):
    """A proxy cuts the first event stream mid-way; the client reconnects with Last-Event-ID, losing nothing."""
    with CuttingProxy(server.port, cut_after=600) as proxy, ComfyClient(proxy.url) as client:
        job = client.queue(image_prompt(63, steps=4, delay=0.2))
        events = list(client.stream(job.prompt_id))
        assert proxy.cuts == 1 and proxy.connections >= 2
    with ComfyClient(server.url) as direct:
        expected = list(direct.stream(job.prompt_id))
    assert [(e.id, e.type) for e in events] == [(e.id, e.type) for e in expected]


def test_async_client(server, tmp_path):
    async def main() -> None:
        async with AsyncComfyClient(server.url) as client:
            result = await client.run(image_prompt(64))
            [file] = result.files
            assert (await client.download(file))[:4] == b"\x89PNG"
            job = await client.queue(image_prompt(65, steps=2))
            kinds = [e.type async for e in client.stream(job.prompt_id)]
            assert kinds[0] == "execution_start" and kinds[-1] == "executing" and kinds.count("preview") == 2
            assert (await client.wait(job.prompt_id)).ok
            with pytest.raises(JobFailed):
                await client.run(failing_prompt())
            with pytest.raises(PromptValidationError):
                await client.queue({"1": {"class_type": "NoSuchNode", "inputs": {}}})
            results = await asyncio.gather(*(client.run(image_prompt(v)) for v in (70, 71, 72)))
            assert [r.ok for r in results] == [True, True, True]
            assert len({r.prompt_id for r in results}) == 3

    asyncio.run(main())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CuttingProxy:
    """A TCP proxy to 127.0.0.1:``port`` that drops the first event-stream response after ``cut_after`` bytes."""

    def __init__(self, port: int, cut_after: int):
        self.upstream = port
        self.cut_after = cut_after
        self.cuts = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.sock.close()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        state = {"cutting": False, "sent": 0}

        def pump_requests() -> None:
            try:
                while chunk := conn.recv(65536):
                    if b"/events" in chunk and self.cuts == 0:  # requests on a kept-alive connection count too
                        self.cuts += 1
                        state["cutting"], state["sent"] = True, 0
                    upstream.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=pump_requests, daemon=True).start()
        try:
            while chunk := upstream.recv(65536):
                if state["cutting"] and state["sent"] + len(chunk) > self.cut_after:
                    conn.sendall(chunk[: self.cut_after - state["sent"]])
                    time.sleep(0.05)
                    break
                conn.sendall(chunk)
                if state["cutting"]:
                    state["sent"] += len(chunk)
        except OSError:
            pass
        finally:
            for s in (conn, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
