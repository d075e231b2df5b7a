"""The frontend's workflow templates as installed (the ``comfyui-workflow-templates-*`` packages)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


def template(name: str) -> dict:
    """The UI workflow of template ``name``; skips the test when the templates or that one are not installed."""
    spec = importlib.util.find_spec("comfyui_workflow_templates_json") or \
        importlib.util.find_spec("comfyui_workflow_templates_core")
    if spec is None:
        pytest.skip("the workflow templates are not installed")
    found = list(Path(spec.origin).parent.parent.glob(f"comfyui_workflow_templates_*/**/{name}.json"))
    if not found:
        pytest.skip(f"template {name} is not in the installed templates")
    return json.loads(found[0].read_text())
