"""Nodes open output and temp files by name only for their prompt's owner, as ``/view`` serves them.

Bob naming Alice's saved image in ``LoadImage`` (``"x.png [output]"``, or a
preview's ``[temp]``) must get a missing file, not her picture; so must a
node pack that resolves the name with ComfyUI's
``folder_paths.get_annotated_filepath``. Error messages never show server paths.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from plugins.multiuser.tests.conftest import ADMIN, User

PACK = '''
import folder_paths


class ReadAnnotated:
    CATEGORY = "testing"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "read"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING", {"default": ""})}}

    def read(self, name):
        with open(folder_paths.get_annotated_filepath(name), "rb") as f:
            return {"ui": {"text": [str(len(f.read()))]}}


NODE_CLASS_MAPPINGS = {"ReadAnnotated": ReadAnnotated}
'''


def _wait(user: User, prompt_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = user.get(f"/api/history/{prompt_id}").json()
        if prompt_id in entry:
            return entry[prompt_id]
        time.sleep(0.2)
    pytest.fail("the prompt did not finish")


def _produce(user: User, prefix: str) -> tuple[str, str]:
    """An image saved to output and a preview in temp, both owned by ``user``: their annotated names."""
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    queued = user.post("/api/prompt", json={"prompt": prompt})
    assert queued.status_code == 200, queued.text
    outputs = _wait(user, queued.json()["prompt_id"])["outputs"]
    saved, preview = outputs["2"]["images"][0], outputs["3"]["images"][0]
    assert saved["subfolder"] == "" and preview["subfolder"] == ""
    return f"{saved['filename']} [output]", f"{preview['filename']} [temp]"


def _load(name: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


@pytest.fixture
def server(make_auth_server, tmp_path):
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / "read_annotated.py").write_text(PACK)
    srv = make_auth_server(base=base)
    nodes = set(User(srv, *ADMIN).get("/api/object_info").json())
    if not {"LoadImage", "SaveImage", "EmptyImage", "PreviewImage"} <= nodes:
        pytest.skip("needs the core image nodes")
    return srv


def _users(server, *names: str) -> list[User]:
    admin = User(server, *ADMIN)
    users = []
    for name in names:
        password = f"pw-{name}-secret"
        assert admin.post("/api/users", json={"username": name, "password": password}).status_code == 200
        users.append(User(server, name, password))
    return users


def test_load_image_cannot_read_another_users_output_or_temp(server):
    alice, bob = _users(server, "alice", "bob")
    admin = User(server, *ADMIN)
    saved, preview = _produce(alice, "alice_secret")
    for name in (saved, preview):
        refused = bob.post("/api/prompt", json={"prompt": _load(name)})
        assert refused.status_code == 400, refused.text
        assert "Invalid image file" in refused.json()["node_errors"]["1"]["errors"][0]["details"]
        assert server.base_dir not in refused.text
        # the owner, and an administrator (as /view allows them), load the same names
        for allowed in (alice, admin):
            queued = allowed.post("/api/prompt", json={"prompt": _load(name)})
            assert queued.status_code == 200, queued.text
            assert _wait(allowed, queued.json()["prompt_id"])["status"]["status_str"] == "success"
    # Bob's own output stays his to load.
    own, _ = _produce(bob, "bob_own")
    queued = bob.post("/api/prompt", json={"prompt": _load(own)})
    assert queued.status_code == 200, queued.text


def test_load_latent_cannot_read_another_users_saved_latent(server):
    nodes = set(User(server, *ADMIN).get("/api/object_info").json())
    if not {"EmptyLatentImage", "SaveLatent", "LoadLatent"} <= nodes:
        pytest.skip("needs the latent file nodes")
    alice, bob = _users(server, "erin", "frank")
    prompt = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "erin_latent"}}}
    queued = alice.post("/api/prompt", json={"prompt": prompt})
    saved = _wait(alice, queued.json()["prompt_id"])["outputs"]["2"]["latents"][0]
    name = f"{saved['filename']} [output]"
    load = {"1": {"class_type": "LoadLatent", "inputs": {"latent": name}},
            "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "copy"}}}
    refused = bob.post("/api/prompt", json={"prompt": load})
    assert refused.status_code == 400, refused.text
    assert "Invalid latent file" in refused.text and server.base_dir not in refused.text
    mine = alice.post("/api/prompt", json={"prompt": load})
    assert mine.status_code == 200, mine.text
    assert _wait(alice, mine.json()["prompt_id"])["status"]["status_str"] == "success"


def test_packs_resolving_annotated_names_are_scoped_too(server):
    alice, bob = _users(server, "carol", "dave")
    saved, _ = _produce(alice, "carol_secret")
    prompt = {"1": {"class_type": "ReadAnnotated", "inputs": {"name": saved}}}
    mine = alice.post("/api/prompt", json={"prompt": prompt})
    entry = _wait(alice, mine.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success" and int(entry["outputs"]["1"]["text"][0]) > 0

    theirs = bob.post("/api/prompt", json={"prompt": prompt})
    assert theirs.status_code == 200, theirs.text
    entry = _wait(bob, theirs.json()["prompt_id"])
    assert entry["status"]["status_str"] == "error" and "1" not in entry["outputs"]
    error = next(data for event, data in entry["status"]["messages"] if event == "execution_error")
    assert error["exception_type"] in ("FileNotFoundError", "comfy_kernel.files.access.FileAccessDenied")
    assert server.base_dir not in error["exception_message"]


def _saved_files(entry: dict[str, Any]) -> list[str]:
    """Every file a finished prompt wrote, as an annotated name (``x.flac [output]``)."""
    names = []
    for output in entry["outputs"].values():
        for files in output.values():
            for item in files if isinstance(files, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    sub = f"{item['subfolder']}/" if item.get("subfolder") else ""
                    names.append(f"{sub}{item['filename']} [{item.get('type', 'output')}]")
    return names


def test_every_node_that_opens_a_file_by_name_is_scoped(server):
    """LoadImageMask, LoadImageOutput, LoadAudio and LoadVideo refuse another user's files as LoadImage does."""
    nodes = set(User(server, *ADMIN).get("/api/object_info").json())
    wanted = {"LoadImageMask", "LoadImageOutput", "LoadAudio", "LoadVideo", "EmptyAudio", "SaveAudio",
              "CreateVideo", "SaveVideo", "PreviewAny"}
    if not wanted <= nodes:
        pytest.skip(f"needs {sorted(wanted - nodes)}")
    alice, bob = _users(server, "gina", "hank")
    image, _ = _produce(alice, "gina_secret")
    media = {"1": {"class_type": "EmptyAudio", "inputs": {"duration": 0.2, "sample_rate": 8000, "channels": 1}},
             "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "gina_sound"}},
             "3": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 7}},
             "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8.0}},
             "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "gina_clip",
                                                        "format": "auto", "codec": "auto"}}}
    queued = alice.post("/api/prompt", json={"prompt": media})
    assert queued.status_code == 200, queued.text
    entry = _wait(alice, queued.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    written = _saved_files(entry)
    sound = next(n for n in written if ".flac" in n)
    clip = next(n for n in written if ".mp4" in n)
    loads = {
        "LoadImageMask": ({"image": image, "channel": "alpha"}, "Invalid image file"),
        "LoadImageOutput": ({"image": image}, "Invalid image file"),
        "LoadAudio": ({"audio": sound}, "Invalid audio file"),
        "LoadVideo": ({"file": clip}, "Invalid video file"),
    }
    for node, (inputs, message) in loads.items():
        prompt = {"1": {"class_type": node, "inputs": inputs},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        refused = bob.post("/api/prompt", json={"prompt": prompt})
        assert refused.status_code == 400, (node, refused.text)
        assert message in refused.text, (node, refused.text)
        assert server.base_dir not in refused.text
        mine = alice.post("/api/prompt", json={"prompt": prompt})
        assert mine.status_code == 200, (node, mine.text)
        done = _wait(alice, mine.json()["prompt_id"])
        assert done["status"]["status_str"] == "success", (node, done["status"])
