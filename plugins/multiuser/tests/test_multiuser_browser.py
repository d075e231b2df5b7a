"""The real frontend behind --auth: sign in through the page, boot the app, run a workflow.

Drives headless Chromium over the DevTools protocol with a few lines of
code (no extra packages). Skipped where Chromium or the frontend package is
missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from importlib.util import find_spec
from typing import Any

import pytest
from websockets.sync.client import connect

from plugins.multiuser.tests.conftest import ADMIN

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs chromium"),
    pytest.mark.skipif(find_spec("comfyui_frontend_package") is None, reason="needs the frontend package"),
]


class Page:
    """One headless Chromium page; ``evaluate`` runs JavaScript and returns its (awaited) value."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="mu-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not start")
            time.sleep(0.05)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(connect(target["webSocketDebuggerUrl"], max_size=None))
        self.ids = itertools.count(1)

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(expression)
            time.sleep(0.25)

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


PROMPT = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 41}},
          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def test_frontend_signs_in_and_runs_a_workflow(auth):
    page = Page()
    try:
        page.call("Page.enable")
        page.call("Page.navigate", url=auth.url + "/")
        page.wait_for("location.pathname === '/auth/login' && document.getElementById('form')?.dataset.ready === 'true'",
                      30)
        page.evaluate(f"""(() => {{
            document.querySelector('input[name=username]').value = {json.dumps(ADMIN[0])};
            document.querySelector('input[name=password]').value = {json.dumps(ADMIN[1])};
            document.querySelector('#form button[type=submit]').click();
            return true;
        }})()""")
        try:
            page.wait_for("location.pathname === '/' && !!(window.app && window.app.graph && window.app.api)", 240)
        except TimeoutError:
            state = page.evaluate("JSON.stringify({href: location.href, text: document.body.innerText.slice(0, 300)})")
            raise AssertionError(f"the app did not boot after signing in: {state}\n{auth.log()[-2000:]}") from None
        assert page.evaluate("document.cookie.includes('session=')") is False  # HttpOnly: invisible to scripts
        me = page.evaluate("fetch('/api/user').then(r => r.json())")
        assert me["username"] == ADMIN[0] and me["auth_method"] == "session"
        # Queue through the frontend's own API client: its fetch (cookie + same origin) and its socket.
        detail = page.evaluate(f"""new Promise((resolve, reject) => {{
            const api = window.app.api;
            const timer = setTimeout(() => reject(new Error('no executed event')), 90000);
            api.addEventListener('executed', (event) => {{ clearTimeout(timer); resolve(event.detail); }});
            api.fetchApi('/prompt', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                body: JSON.stringify({{prompt: {json.dumps(PROMPT)}, client_id: api.clientId}})}})
              .then(r => r.ok ? null : r.text().then(t => reject(new Error(t))));
        }})""", timeout=120)
        assert detail["output"]["text"] == ["41"]
    finally:
        page.close()
