"""A prompt a worker has taken while its row is being marked running (``Executor.starting``) is in progress.

The hand-over awaits the database (a network round trip on PostgreSQL); a job
asked for in that moment was reported unknown (404) and left out of /queue.
"""

from __future__ import annotations

from comfy_kernel.cli import build_parser
from comfy_kernel.execution.job_routes import find_job
from comfy_kernel.execution.queue import QueuedPrompt
from comfy_kernel.plugins import PluginHost
from comfy_kernel.server import create_kernel

PLUGINS = {"core_nodes", "userdata", "manager", "assets", "hub", "multiuser", "compat", "billing", "cluster"}


def executor(tmp_path):
    host = PluginHost(disabled=PLUGINS)
    host.discover()
    args = build_parser(host).parse_args(["serve", "--base-directory", str(tmp_path)])
    return create_kernel(args, host).executor


async def test_a_prompt_being_marked_running_is_found_in_progress(tmp_path):
    ex = executor(tmp_path)
    item = [3, "p-starting", {"1": {"class_type": "X", "inputs": {}}}, {"client_id": "c"}, ["1"]]
    ex.starting["p-starting"] = QueuedPrompt(item, "alice")
    assert ex.status("p-starting") == "running"
    found = await find_job(ex, "alice", "p-starting")
    assert found is not None and found.state == "in_progress"
    running, pending = ex.queue_for("alice")
    assert [entry[1] for entry in running] == ["p-starting"] and pending == []
    assert ex.queue_for("bob") == ([], [])
