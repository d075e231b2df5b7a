"""What every test module shares: models and temporary folders are let go after each module.

On a CPU-only machine the process-wide model manager keeps models while host
memory allows, which is right for a server but not for one test process that
loads dozens of models module after module while the servers it starts need
memory too. Without this, the test process grows until the kernel's OOM killer
stops it or a server it starts.

The folders a module's fixtures make with ``tmp_path_factory`` (server bases
holding random-weight model files of up to a few GB) are removed when the
module ends, unless one of its tests failed: a whole run would otherwise keep
every module's files until it ends and fill a small disk. Session-scoped
fixtures name their folders ``session-*`` so they survive.

tox runs the suite on two pytest-xdist workers (``--dist loadgroup``). The
core_nodes modules load model files of several GB, in the test process and in
the servers they start, so two of them side by side can exhaust a 24 GB
machine: they form one group, run by one worker in order and scheduled first,
while the other worker takes every other module (servers, HTTP, installs).
"""

from __future__ import annotations

import ctypes
import gc
import shutil
import sys

import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_models_after_module():
    yield
    gpu = sys.modules.get("comfy_kernel.gpu")
    manager = getattr(gpu, "_manager", None) if gpu is not None else None
    if manager is not None:
        manager.unload_all()
    gc.collect()
    _return_freed_memory()


def _return_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them, and a worker process grows to 10 GB)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@pytest.fixture(autouse=True, scope="module")
def _module_folders_removed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed != failed:
        return
    for path in set(base.iterdir()) - before:
        if not path.name.startswith("session-"):
            shutil.rmtree(path, ignore_errors=True)


MODEL_HEAVY = "plugins/core_nodes/"

#: Under ``CK_TEST_DATABASE=postgresql`` (tox's ``postgres`` env) these folders' tests are not run again:
#: their plugins keep nothing in the database, so on PostgreSQL their servers would only use the kernel's
#: queue and history, which the kernel's own tests cover there. One module stays, so that real model
#: workflows still run end to end on PostgreSQL.
NO_TABLES_OF_THEIR_OWN = ("plugins/core_nodes/", "plugins/userdata/", "plugins/compat/")
ON_POSTGRES_TOO = ("plugins/core_nodes/tests/test_parity_workflows.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``CK_TEST_DATABASE=postgresql``, leave out the tests of :data:`NO_TABLES_OF_THEIR_OWN`."""
    import os

    if os.environ.get("CK_TEST_DATABASE") != "postgresql":
        return
    dropped, kept = [], []
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(NO_TABLES_OF_THEIR_OWN) and path not in ON_POSTGRES_TOO:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(autouse=True, scope="session")
def _servers_on_postgres(request: pytest.FixtureRequest):
    """``CK_TEST_DATABASE=postgresql`` (tox's ``postgres`` env): every server the tests start keeps its state in
    PostgreSQL instead of its SQLite file (``comfy_kernel.testing.TEST_POSTGRES``)."""
    import os

    if os.environ.get("CK_TEST_DATABASE") != "postgresql":
        yield
        return
    from comfy_kernel.testing import TEST_POSTGRES

    server = request.getfixturevalue("postgres")
    os.environ[TEST_POSTGRES] = server.database_url("postgres")
    yield
    os.environ.pop(TEST_POSTGRES, None)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server for this test process (Debian's ``postgresql`` package); see ``PostgresServer``."""
    from comfy_kernel.testing import PostgresServer

    with PostgresServer(tmp_path_factory.mktemp("session-postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres, request: pytest.FixtureRequest) -> str:
    """A new, empty database on the session's PostgreSQL server, for one test."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + f"_{id(request) % 100000}"
    return postgres.new_database(name)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup``: every core_nodes module in one work unit, every other module in its own.

    xdist's own loadgroup reads ``xdist_group`` marks by renaming node ids, which
    pytest 9 no longer allows, so the grouping is done here by path. Units are
    handed out largest first, so the core_nodes unit starts at once.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModelFilesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "core_nodes" if nodeid.startswith(MODEL_HEAVY) else nodeid.split("::", 1)[0]

    return ModelFilesTogether(config, log)
