"""``comfy-kernel run``'s pure parts: reading workflows, ``--set``, the progress display."""

from __future__ import annotations

import io
import json

import pytest

from comfy_kernel.run import Progress, UsageError, apply_overrides, load_workflow, to_prompt

PROMPT = {"1": {"class_type": "TestValue", "inputs": {"value": 5}, "_meta": {"title": "Seed"}},
          "2": {"class_type": "KSampler", "inputs": {"seed": 1, "model": ["1", 0]}},
          "3": {"class_type": "Save", "inputs": {}, "_meta": {"title": "Seed"}}}


def test_set_parses_json_or_text_and_finds_titles():
    out = apply_overrides(PROMPT, ["2.seed=42", "2.sampler_name=euler", "2.cfg=7.5", "2.text=\"42\"",
                                   "2.values.value0=[1, 2]", "2.flag=true"])
    assert out["2"]["inputs"] == {"seed": 42, "model": ["1", 0], "sampler_name": "euler", "cfg": 7.5,
                                  "text": "42", "values.value0": [1, 2], "flag": True}
    assert PROMPT["2"]["inputs"] == {"seed": 1, "model": ["1", 0]}  # the original is untouched
    with pytest.raises(UsageError, match="no node uniquely titled .Seed."):
        apply_overrides(PROMPT, ["Seed.value=3"])
    with pytest.raises(UsageError, match="expected NODE.INPUT=VALUE"):
        apply_overrides(PROMPT, ["2seed=3"])


def test_workflow_files(tmp_path):
    (tmp_path / "body.json").write_text(json.dumps({"prompt": PROMPT, "client_id": "x"}))
    assert load_workflow(str(tmp_path / "body.json")) == PROMPT
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(UsageError, match="is not a workflow"):
        load_workflow(str(tmp_path / "list.json"))
    assert to_prompt(PROMPT, None) == (PROMPT, {})
    with pytest.raises(UsageError, match="not a UI-format workflow"):
        to_prompt({"nodes": 3}, {})


def test_progress_lines_without_a_terminal():
    stream = io.StringIO()
    progress = Progress(PROMPT, stream)
    for kind, data in [("execution_start", {}), ("execution_cached", {"nodes": ["1"]}),
                       ("executing", {"node": "2"}), ("progress", {"node": "2", "value": 1, "max": 2}),
                       ("progress", {"node": "2", "value": 2, "max": 2}), ("executing", {"node": "3"}),
                       ("execution_success", {})]:
        progress.event(kind, data)
    assert stream.getvalue().splitlines() == [
        "1 of 3 nodes cached", "[2/3] KSampler #2", "[2/3] KSampler #2 " + "█" * 24 + " 2/2",
        "[3/3] Save #3 (Seed)"]
    quiet = io.StringIO()
    Progress(PROMPT, quiet, quiet=True).event("executing", {"node": "2"})
    assert quiet.getvalue() == ""
