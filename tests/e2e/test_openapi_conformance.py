"""Schemathesis against the kernel's own operations in the seed OpenAPI specs.

Runs over a real server, for the ComfyUI seed and the cloud seed: no generated
request may produce a 5xx, and every operation answers with documented status
codes, content types and bodies — except the deliberate deviations listed in
the README (each one is ComfyUI's real behaviour, or a 4xx where ComfyUI
crashes with a 500).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from comfy_kernel.testing import ServerProcess

SEEDS = os.path.join(os.path.dirname(__file__), "..", "data", "seeds")
SPEC = os.path.join(SEEDS, "comfyui-openapi.yaml")
CLOUD_SPEC = os.path.join(SEEDS, "comfy-cloud-openapi.yaml")

KERNEL_OPS = r"^/(api/(upload|view|view_metadata|system_stats|features|object_info|embeddings|models|experiment)|internal/)"
EXECUTOR_OPS = r"|^/api/(prompt|queue|interrupt|free|history|jobs)"

# Path regexes of operations whose answers deviate from the ComfyUI seed on purpose; see README.
DEVIATIONS = [
    "/api/features$",                 # max_upload_size is a number (the seed types every flag as boolean)
    "/api/system_stats$",             # index is null on CPU; unknown versions are null (spec/server.md 7.1)
    "/internal/folder_paths$",        # lists of strings, as ComfyUI 0.3.64 answers
    "/internal/logs$",                # a JSON string, as ComfyUI answers
    "/internal/logs/raw$",            # "t" is an ISO-8601 string, as ComfyUI answers
    "/api/view$",                     # 400/403 for hostile names instead of ComfyUI's unlisted codes
    "/internal/files/",               # 400 for an unknown directory type
    "/internal/logs/subscribe$",      # 400 for a bad body where ComfyUI crashes
    "/api/upload/mask$",              # 404 when the original image is missing
    "/api/queue$",                    # the seed's queue-item schema is not a valid 3.1 schema object
    "/api/jobs$",                     # 400 for limit < 1 (bodies checked by test_jobs_bodies_match_the_specs)
]
# The same for the cloud seed (README, "Deviations from the seed OpenAPI specs").
CLOUD_DEVIATIONS = [
    "/internal/folder_paths$",        # lists of strings (the cloud seed nests lists), as ComfyUI answers
    "/internal/logs$",                # a JSON string (the cloud seed says text/plain), as ComfyUI answers
    "/internal/logs/raw$",            # "t" is an ISO-8601 string, as ComfyUI answers
    "/internal/logs/subscribe$",      # 400 for a bad body where ComfyUI crashes
    "/api/queue$",                    # POST answers 200 with an empty body, as ComfyUI does
    "/api/jobs$",                     # 400 for limit < 1 (bodies checked by test_jobs_bodies_match_the_specs)
]


def _schemathesis() -> str | None:
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    return exe if os.path.exists(exe) else None


pytestmark = pytest.mark.skipif(_schemathesis() is None, reason="schemathesis is not installed")


@pytest.mark.parametrize("spec", [SPEC, CLOUD_SPEC])
def test_seed_spec_is_present(spec):
    """The seeds travel with the tests; without them the conformance runs below would test nothing."""
    assert os.path.isfile(spec), f"test data missing: {spec}"


@pytest.fixture(scope="module")
def kernel_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("st") / "base"
    with ServerProcess(base, "--disable-plugins", "core_nodes,userdata,manager,assets,hub,multiuser") as server:
        yield server


def _ops() -> str:
    if importlib.util.find_spec("comfy_kernel.execution.routes") is not None:
        return KERNEL_OPS + EXECUTOR_OPS
    return KERNEL_OPS


def _run(server, checks: str, extra: list[str], spec: str = SPEC, ops: str | None = None
         ) -> subprocess.CompletedProcess:
    assert os.path.isfile(spec), f"test data missing: {spec}"
    cmd = [_schemathesis(), "run", spec, "--url", server.url, "-n", "25", "--seed", "1",
           "--include-path-regex", ops or _ops(), "--checks", checks, "--no-color", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=server.base_dir)


def _excluding(deviations: list[str]) -> list[str]:
    return ["--exclude-path-regex", "|".join(f"({p})" for p in deviations)]


CONFORMANCE = "status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
@pytest.mark.parametrize("spec", [SPEC, CLOUD_SPEC])
def test_no_server_errors(kernel_server, spec):
    out = _run(kernel_server, "not_a_server_error", [], spec)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert kernel_server.get("/health").status_code == 200


@pytest.mark.slow
def test_responses_match_the_spec(kernel_server):
    out = _run(kernel_server, CONFORMANCE, _excluding(DEVIATIONS))
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_responses_match_the_cloud_spec(kernel_server):
    """Error bodies carry the cloud seed's ``code``; job times are integer milliseconds."""
    out = _run(kernel_server, CONFORMANCE, _excluding(CLOUD_DEVIATIONS), CLOUD_SPEC)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("spec", [SPEC, CLOUD_SPEC])
def test_jobs_bodies_match_the_specs(kernel_server, spec):
    """``/api/jobs`` bodies and content types (its 400 for a limit below 1 is the listed deviation)."""
    out = _run(kernel_server, "content_type_conformance,response_schema_conformance", [], spec,
               ops=r"^/api/jobs$")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
