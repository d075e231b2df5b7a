"""The node coverage figures and table in the README are current, and the template counting works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("coverage_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_node_table_is_current():
    """Run as a fresh process, as a developer runs it, so nothing an earlier test imported can change it."""
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"run: python plugins/core_nodes/tools/coverage.py\n{done.stderr[-4000:]}"


def test_template_types_skip_subgraph_instances_and_notes(coverage):
    workflow = {
        "nodes": [{"type": "KSampler"}, {"type": "MarkdownNote"}, {"type": "sub-1"}],
        "definitions": {"subgraphs": [{"id": "sub-1", "nodes": [{"type": "VAEDecode"}, {"type": "Reroute"}]}]},
    }
    assert coverage.template_types(workflow) == {"KSampler", "VAEDecode"}


def test_every_local_template_is_counted(coverage):
    templates = coverage.local_templates()
    assert len(templates) >= 300 and all(types for types in templates.values())
    assert coverage.figures()["templates_runnable"] >= 5
