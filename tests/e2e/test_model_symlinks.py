"""Symlinked model files and folders are listed *and* load; input/output stay confined.

The usual way to share one model store between tools is a symlink in
``models/checkpoints``. The loader's list showed such files, then loading
them failed "not found" because the path check refused targets outside the
folder. Model folders are the operator's: their links are followed.
"""

from __future__ import annotations

import json
import struct

import pytest

from tests.conftest import KERNEL_ONLY


def safetensors_file(path, metadata: dict[str, str]) -> None:
    header = json.dumps({"__metadata__": metadata}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.fixture
def linked(tmp_path, make_server):
    store = tmp_path / "model-store"
    (store / "family").mkdir(parents=True)
    safetensors_file(store / "shared.safetensors", {"title": "shared file"})
    safetensors_file(store / "family" / "inner.safetensors", {"title": "inside a linked folder"})
    base = tmp_path / "base"
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "linked.safetensors").symlink_to(store / "shared.safetensors")
    (checkpoints / "family").symlink_to(store / "family", target_is_directory=True)
    (base / "input").mkdir()
    (base / "input" / "escape.png").symlink_to(store / "shared.safetensors")
    return make_server(*KERNEL_ONLY, base=base)


def test_linked_models_are_listed_and_readable(linked):
    assert linked.get("/models/checkpoints").json() == ["family/inner.safetensors", "linked.safetensors"]
    for name, title in (("linked.safetensors", "shared file"), ("family/inner.safetensors", "inside a linked folder")):
        r = linked.get("/view_metadata/checkpoints", params={"filename": name})
        assert r.status_code == 200, (name, r.text)
        assert r.json()["title"] == title
    assert linked.get("/view_metadata/checkpoints", params={"filename": "../../model-store/shared.safetensors"}
                      ).status_code == 404


def test_data_directories_still_refuse_links_out(linked):
    r = linked.get("/view", params={"filename": "escape.png", "type": "input"})
    assert r.status_code in (400, 403, 404) and r.status_code != 200
