"""Turning the plugin on (flag, environment, config file) and failing closed when it cannot start."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from comfy_kernel.config import default_config
from comfy_kernel.http import HTTPError
from comfy_kernel.testing import ServerProcess
from comfy_kernel_multiuser import enforcement, plugin
from comfy_kernel_multiuser.context import state
from plugins.multiuser.tests.conftest import ADMIN, AuthServer, create_admin


@pytest.mark.parametrize("how", ["environment", "config file"])
def test_auth_from_environment_or_config_file(tmp_path, how):
    base = tmp_path / "base"
    create_admin(base)
    env = {"COMFY_KERNEL_AUTH": "1"} if how == "environment" else {}
    if how == "config file":
        (base / "comfy-kernel.toml").write_text("auth = true\n")
    with ServerProcess(base, env=env) as server:
        assert server.get("/api/object_info").status_code == 401
        assert server.post("/api/auth/session", json={"username": ADMIN[0], "password": ADMIN[1]}).status_code == 200


def test_current_session_tells_its_csrf_token(auth: AuthServer):
    user = auth.new_user()
    info = user.get("/api/auth/session").json()
    assert info["authenticated"] is True and info["csrf_token"] == user.csrf and info["method"] == "session"
    assert auth.anonymous().get("/api/auth/session").json() == {"authenticated": False}
    key = httpx.Client(base_url=auth.url, headers={"X-API-Key": user.api_key()})
    assert key.get("/api/auth/session").json()["method"] == "api_key"
    key.close()


async def test_a_plugin_that_cannot_start_refuses_everything(database):
    kernel = SimpleNamespace(config=default_config(auth=True, secrets_key="short"), state={}, route_table=None,
                             database=database)
    mu = state(kernel)
    await plugin.ck_startup(kernel)  # must not raise: raising would unregister the identity hook
    assert mu.broken and not mu.started
    request = SimpleNamespace(scope={"type": "http", "method": "GET", "path": "/api/system_stats"}, headers={},
                              cookies={}, query_params={}, client=None)
    with pytest.raises(HTTPError) as refused:
        enforcement.resolve(mu, request)
    assert refused.value.status == 503
    await plugin.ck_shutdown(kernel)
