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
"""

from __future__ import annotations

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
