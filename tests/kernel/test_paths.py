import os

import pytest

from comfy_kernel.files.paths import UnsafePath, check_component, is_within, safe_join, split_annotation


def test_safe_join_allows_inner_paths(tmp_path):
    assert safe_join(str(tmp_path), "a/../b.png") == os.path.join(str(tmp_path), "b.png")
    assert safe_join(str(tmp_path), "sub", "x.png") == os.path.join(str(tmp_path), "sub", "x.png")


@pytest.mark.parametrize("part", ["../x", "a/../../x", "/etc/passwd", "\\evil", "a\x00b"])
def test_safe_join_refuses_escapes(tmp_path, part):
    with pytest.raises(UnsafePath):
        safe_join(str(tmp_path), part)


def test_safe_join_refuses_symlink_out(tmp_path):
    outside = tmp_path / "outside"
    base = tmp_path / "base"
    outside.mkdir()
    base.mkdir()
    os.symlink(outside, base / "link")
    with pytest.raises(UnsafePath):
        safe_join(str(base), "link/file.png")
    assert not is_within(str(base / "link"), str(base))


def test_split_annotation_requires_space():
    assert split_annotation("a.png [output]") == ("a.png", "output")
    assert split_annotation("a.png[output]") == ("a.png[output]", None)
    assert split_annotation("x [models]") == ("x [models]", None)


@pytest.mark.parametrize("name", ["", " ", "a/b", "a\\b", "..", ".", "a\x00"])
def test_check_component_refuses(name):
    with pytest.raises(UnsafePath):
        check_component(name)
