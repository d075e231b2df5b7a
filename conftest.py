"""What every test module shares: models loaded in the test process are let go after each module.

On a CPU-only machine the process-wide model manager keeps models while host
memory allows, which is right for a server but not for one test process that
loads dozens of models module after module while the servers it starts need
memory too. Without this, the test process grows until the kernel's OOM killer
stops it or a server it starts.
"""

from __future__ import annotations

import gc
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
