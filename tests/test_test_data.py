"""The tests carry their own data: a plain clone runs every parity and conformance check.

Reference outputs, workflows, seed specs and the checkpoint generator live in
``tests/data`` (or a plugin's ``tests/data``); no test may read from outside the
repository, and a missing data file fails the test that needs it instead of
skipping it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_DATA = ROOT / "plugins" / "core_nodes" / "tests" / "data"

DATA_FILES = [
    "tests/data/seeds/comfyui-openapi.yaml",
    "tests/data/seeds/comfy-cloud-openapi.yaml",
    "plugins/userdata/tests/data/comfyui-openapi.yaml",
    "plugins/userdata/tests/data/comfy-cloud-openapi.yaml",
    "plugins/assets/tests/data/comfyui-openapi.yaml",
    "plugins/assets/tests/data/comfy-cloud-openapi.yaml",
    "plugins/hub/tests/data/comfy-cloud-openapi.yaml",
    "plugins/userdata/tests/data/txt2img.json",
    "plugins/core_nodes/tests/data/make_checkpoint.py",
    "plugins/core_nodes/tests/data/reference/inputs/ref_input_64.png",
]
# A path built to a folder beside the checkout: "..", then "shared".
OUTSIDE = re.compile(r"""(parents?\[\d\]|\.parent|dirname\([^)]*\)|["']\.\.["'])[^\n]{0,60}["']shared["']""")


@pytest.mark.parametrize("relative", DATA_FILES)
def test_data_file_is_in_the_repository(relative):
    assert (ROOT / relative).is_file(), f"test data missing: {relative}"


def test_every_reference_workflow_has_its_outputs():
    workflows = sorted((CORE_DATA / "reference" / "workflows").glob("*.json"))
    assert len(workflows) == 16  # 13 SD1.5 and 3 SDXL
    for path in workflows:
        json.loads(path.read_text())
        outputs = CORE_DATA / "reference" / "outputs" / path.stem
        assert sorted(outputs.glob("*.png")), f"no reference image for {path.stem}"
        if not path.stem.startswith("sdxl_"):  # the SDXL captures have no guided predictions to replay
            assert sorted(outputs.glob("ksampler0_*.npy")), f"no captured sampler run for {path.stem}"


def test_no_test_reads_outside_the_repository():
    offenders = []
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]:
        if "data" in path.relative_to(ROOT).parts or path == Path(__file__).resolve():
            continue
        if OUTSIDE.search(path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def _core_conftest():
    spec = importlib.util.spec_from_file_location("core_nodes_conftest_copy",
                                                  ROOT / "plugins" / "core_nodes" / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_data_fails_instead_of_skipping(tmp_path):
    conftest = _core_conftest()
    with pytest.raises(pytest.fail.Exception):
        conftest.require_data(ROOT / "plugins" / "core_nodes" / "tests" / "data" / "no-such-file")
    assert conftest.require_data(CORE_DATA / "make_checkpoint.py") == CORE_DATA / "make_checkpoint.py"
