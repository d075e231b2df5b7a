"""SaveImage / PreviewImage: counter naming, subfolders, refusals, metadata chunks and quantisation."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _nodes import use_base  # noqa: E402

from comfy_kernel_core_nodes.nodes import save  # noqa: E402


@pytest.fixture
def out(tmp_path):
    use_base(tmp_path)
    return tmp_path / "output"


def test_counter_continues_after_existing_files(out):
    for name in ("ComfyUI_00007_.webp", "ComfyUI_00100_extra.png", "ComfyUI_00200.png", "ComfyUI_temp_x_00900_.png"):
        (out / name).write_bytes(b"")
    ui = save.SaveImage().save_images(torch.zeros(2, 8, 8, 3))["ui"]["images"]
    assert [i["filename"] for i in ui] == ["ComfyUI_00101_.png", "ComfyUI_00102_.png"]
    assert ui[0] == {"filename": "ComfyUI_00101_.png", "subfolder": "", "type": "output"}


def test_subfolder_tokens_and_refusal(out):
    ui = save.SaveImage().save_images(torch.zeros(1, 8, 16, 3), "sub/dir/My_%width%x%height%")["ui"]["images"]
    assert ui == [{"filename": "My_16x8_00001_.png", "subfolder": os.path.join("sub", "dir"), "type": "output"}]
    assert (out / "sub" / "dir" / "My_16x8_00001_.png").is_file()
    ui = save.SaveImage().save_images(torch.zeros(1, 8, 8, 3), "a/../b")["ui"]["images"]
    assert ui[0]["subfolder"] == "" and ui[0]["filename"] == "b_00001_.png"
    for bad in ("../x", "/abs/x"):
        with pytest.raises(save.UnsafeSavePath, match="Saving image outside the output folder is not allowed"):
            save.SaveImage().save_images(torch.zeros(1, 8, 8, 3), bad)


def test_batch_num_gets_its_own_counter_per_name(out):
    first = save.SaveImage().save_images(torch.zeros(2, 8, 8, 3), "x_%batch_num%")["ui"]["images"]
    again = save.SaveImage().save_images(torch.zeros(2, 8, 8, 3), "x_%batch_num%")["ui"]["images"]
    assert [i["filename"] for i in first] == ["x_0_00001_.png", "x_1_00001_.png"]
    assert [i["filename"] for i in again] == ["x_0_00002_.png", "x_1_00002_.png"]


def test_metadata_chunks_and_quantisation(out):
    prompt = {"1": {"class_type": "X", "inputs": {"text": "caf\u00e9"}}}
    workflow = {"nodes": [1, 2], "extra": {"k": "v"}}
    image = torch.tensor([[[0.0, 0.5, 1.0], [0.999, 0.0039, 1.5]]])[None]
    ui = save.SaveImage().save_images(image, "meta", prompt=prompt, extra_pnginfo={"workflow": workflow})
    path = out / ui["ui"]["images"][0]["filename"]
    png = Image.open(path)
    assert list(png.text) == ["prompt", "workflow"]
    assert png.text["prompt"] == json.dumps(prompt) and "\\u00e9" in png.text["prompt"]
    assert png.text["workflow"] == '{"nodes": [1, 2], "extra": {"k": "v"}}'
    assert np.asarray(png).tolist() == [[[0, 127, 255], [254, 0, 255]]]
    raw = path.read_bytes()
    assert raw.index(b"tEXtprompt") < raw.index(b"IDAT")


def test_disable_metadata(tmp_path):
    use_base(tmp_path, disable_metadata=True)
    ui = save.SaveImage().save_images(torch.zeros(1, 8, 8, 3), prompt={"a": 1}, extra_pnginfo={"workflow": {}})
    assert Image.open(tmp_path / "output" / ui["ui"]["images"][0]["filename"]).text == {}


def test_preview_goes_to_temp_with_a_random_suffix(tmp_path):
    use_base(tmp_path)
    node = save.PreviewImage()
    ui = node.save_images(torch.zeros(1, 8, 8, 3))["ui"]["images"][0]
    assert ui["type"] == "temp" and ui["filename"].startswith("ComfyUI_temp_") and len(node.prefix_append) == 11
    assert set(node.prefix_append[6:]) <= set(save.PREVIEW_ALPHABET) and "w" not in save.PREVIEW_ALPHABET
    assert (tmp_path / "temp" / ui["filename"]).is_file()


def test_concurrent_saves_never_share_a_name(out):
    names: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        ui = save.SaveImage().save_images(torch.zeros(2, 8, 8, 3), "race")["ui"]["images"]
        with lock:
            names.extend(i["filename"] for i in ui)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == 12 and len(set(names)) == 12


def test_counter_memo_sees_changes_made_by_others(tmp_path):
    """The remembered counter is used only while nobody else touched the folder."""
    folder = str(tmp_path)
    names = []
    for _ in range(3):
        handle, name, _counter = save.reserve(folder, "memo", save.next_counter(folder, "memo"))
        handle.close()
        names.append(name)
    assert names == ["memo_00001_.png", "memo_00002_.png", "memo_00003_.png"]
    (tmp_path / "memo_00040_.png").write_bytes(b"")  # another process saved meanwhile
    assert save.next_counter(folder, "memo") == 41
    os.remove(tmp_path / "memo_00040_.png")
    os.remove(tmp_path / "memo_00003_.png")
    assert save.next_counter(folder, "memo") == 3  # a scan, as before: deletions free the numbers
