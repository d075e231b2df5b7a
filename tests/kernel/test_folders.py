import os
import time

import pytest

from comfy_kernel.files.folders import DataDirs, FolderRegistry, content_category
from comfy_kernel.files.paths import UnsafePath


def registry(tmp_path) -> FolderRegistry:
    return FolderRegistry(DataDirs.from_base(str(tmp_path)))


def test_defaults_and_legacy_names(tmp_path):
    reg = registry(tmp_path)
    assert reg.names()[:5] == ["checkpoints", "configs", "loras", "vae", "text_encoders"]
    assert reg.paths("clip") == reg.paths("text_encoders") == [
        str(tmp_path / "models" / "text_encoders"), str(tmp_path / "models" / "clip")]
    assert reg.paths("unet")[0] == str(tmp_path / "models" / "unet")


def test_add_rules(tmp_path):
    reg = registry(tmp_path)
    reg.add("checkpoints", str(tmp_path / "extra"))
    reg.add("checkpoints", str(tmp_path / "first"), is_default=True)
    assert reg.paths("checkpoints")[0] == str(tmp_path / "first")
    assert reg.paths("checkpoints")[-1] == str(tmp_path / "extra")
    reg.add("checkpoints", str(tmp_path / "extra"), is_default=True)
    assert reg.paths("checkpoints")[0] == str(tmp_path / "extra")
    reg.add("brand_new", str(tmp_path / "bn"))
    assert reg.folders["brand_new"].extensions == set()


def test_listing_filters_sorts_and_invalidates(tmp_path):
    reg = registry(tmp_path)
    ck = tmp_path / "models" / "checkpoints"
    (ck / "sub").mkdir(parents=True)
    (ck / "b.safetensors").write_bytes(b"")
    (ck / "A.CKPT").write_bytes(b"")
    (ck / "sub" / "c.pt").write_bytes(b"")
    (ck / "readme.txt").write_bytes(b"")
    (ck / ".git").mkdir()
    (ck / ".git" / "x.pt").write_bytes(b"")
    assert reg.list("checkpoints") == ["A.CKPT", "b.safetensors", os.path.join("sub", "c.pt")]
    before = reg.version
    time.sleep(0.01)
    (ck / "sub" / "d.pt").write_bytes(b"")
    assert os.path.join("sub", "d.pt") in reg.list("checkpoints")
    assert reg.version > before


def test_full_path_cannot_escape(tmp_path):
    reg = registry(tmp_path)
    ck = tmp_path / "models" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "m.pt").write_bytes(b"")
    (tmp_path / "secret.pt").write_bytes(b"")
    assert reg.full_path("checkpoints", "m.pt") == str(ck / "m.pt")
    assert reg.full_path("checkpoints", "../../secret.pt") is None
    assert reg.full_path("nope", "m.pt") is None


def test_extra_model_paths_yaml(tmp_path):
    cfg = tmp_path / "conf" / "extra.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        "a111:\n"
        "    base_path: ../sd\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "         models/Lora\n"
        "         models/LyCORIS\n"
        "    unet: models/unet\n"
        "    my_kind: some/dir\n"
        "empty:\n"
        "other:\n"
        "    is_default: true\n"
        "    vae: relative/vae\n")
    reg = registry(tmp_path)
    reg.load_extra_config(str(cfg))
    sd = tmp_path / "sd"
    assert reg.paths("checkpoints")[-1] == str(sd / "models" / "Stable-diffusion")
    assert reg.paths("loras")[-2:] == [str(sd / "models" / "Lora"), str(sd / "models" / "LyCORIS")]
    assert reg.paths("diffusion_models")[-1] == str(sd / "models" / "unet")
    assert reg.paths("my_kind") == [str(sd / "some" / "dir")]
    assert reg.paths("vae")[0] == str(tmp_path / "conf" / "relative" / "vae")


def test_data_dirs_overrides(tmp_path):
    dirs = DataDirs.from_base(str(tmp_path), temp=str(tmp_path / "t"), output=str(tmp_path / "o"))
    assert dirs.temp == str(tmp_path / "t" / "temp")
    assert dirs.output == str(tmp_path / "o")
    assert dirs.by_type("input") == str(tmp_path / "input")
    assert dirs.by_type("user") is None


def test_content_category():
    assert content_category("x.webp") == "image"
    assert content_category("x.PNG") == "image"
    assert content_category("x.mp4") == "video"
    assert content_category("x.fbx") == "model"
    assert content_category("x.unknownext") is None


def test_model_folders_follow_symlinks_to_files_and_folders(tmp_path):
    """A model store shared with other tools is linked in; what the listing shows must load."""
    store = tmp_path / "store"
    (store / "family").mkdir(parents=True)
    (store / "shared.safetensors").write_bytes(b"x")
    (store / "family" / "big.safetensors").write_bytes(b"y")
    reg = registry(tmp_path / "base")
    ck = tmp_path / "base" / "models" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "linked.safetensors").symlink_to(store / "shared.safetensors")
    (ck / "family").symlink_to(store / "family", target_is_directory=True)
    listed = reg.list("checkpoints")
    assert listed == ["family/big.safetensors", "linked.safetensors"]
    for name in listed:
        assert reg.full_path("checkpoints", name) == str(ck / name)
        assert os.path.realpath(reg.full_path("checkpoints", name)).startswith(str(store))
    assert reg.full_path("checkpoints", "../../store/shared.safetensors") is None  # names still cannot climb


def test_data_directories_stay_confined(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"s")
    reg = registry(tmp_path / "base")
    os.makedirs(reg.dirs.input)
    os.symlink(outside / "secret.png", os.path.join(reg.dirs.input, "link.png"))
    with pytest.raises(UnsafePath):
        reg.annotated_path("link.png")
