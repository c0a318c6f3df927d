"""Own suites (ml4ml.data.own): every bad folder, file, array or spec field is one
InputError line naming the file and the field."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml4ml.data.own import OwnSuiteSpec, load_own_suite, own_spec_problems
from ml4ml.errors import InputError


def spec(kind="imagefolder", **fields) -> OwnSuiteSpec:
    return OwnSuiteSpec(name="mine", kind=kind, **fields)


def _png(path: Path, size=(8, 8), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)


def _two_classes(root: Path):
    _png(root / "a" / "1.png")
    _png(root / "b" / "1.png")
    return root


def _case(tmp, name):
    """-> (spec, the file the message must name, the field). tmp: an empty folder."""
    root, npz = tmp / "root", tmp / "d.npz"
    good = np.zeros((3, 8, 8), np.uint8)
    if name == "empty folder":
        root.mkdir()
        return spec(root=root), root, "root"
    if name == "no folder":
        return spec(root=root), root, "root"
    if name == "images but no class folders":
        _png(root / "1.png")
        return spec(root=root), root, "root"
    if name == "class folder missing from classes":
        _two_classes(root)
        _png(root / "c" / "1.png")
        return spec(root=root, classes=["a", "b"]), root / "c", "classes"
    if name == "class without a folder":
        _two_classes(root)
        return spec(root=root, classes=["a", "b", "z"]), root / "z", "classes"
    if name == "class folder without images":
        _two_classes(root)
        (root / "c").mkdir()
        (root / "c" / "readme.txt").write_text("x")
        return spec(root=root), root / "c", "root"
    if name == "corrupt image":
        _two_classes(root)
        data = (root / "b" / "1.png").read_bytes()
        (root / "b" / "2.png").write_bytes(data[: len(data) // 2])
        return spec(root=root), root / "b" / "2.png", "root"
    if name == "truncated image":
        _two_classes(root)
        noise = np.random.RandomState(0).randint(0, 256, (64, 64), dtype=np.uint8)
        Image.fromarray(noise).save(root / "a" / "2.png")
        data = (root / "a" / "2.png").read_bytes()
        (root / "a" / "2.png").write_bytes(data[: len(data) // 2])
        return spec(root=root), root / "a" / "2.png", "root"
    if name == "not an image":
        _two_classes(root)
        (root / "a" / "2.jpg").write_text("hello")
        return spec(root=root), root / "a" / "2.jpg", "root"
    if name == "32-bit image":
        _two_classes(root)
        Image.fromarray(np.zeros((4, 4), np.int32)).save(root / "a" / "3.tif")
        return spec(root=root), root / "a" / "3.tif", "root"
    if name == "sizes differ without size":
        _two_classes(root)
        _png(root / "b" / "2.png", size=(9, 8))
        return spec(root=root), root / "b" / "2.png", "size"
    spec_file = tmp / "pipeline.toml"
    fields = {"size one int": ("size", {"size": [28]}),
              "size zero": ("size", {"size": [0, 28]}),
              "size text": ("size", {"size": "28x28"}),
              "channels 2": ("channels", {"channels": 2}),
              "unknown kind": ("kind", {"kind": "folder"}),
              "duplicate classes": ("classes", {"classes": ["a", "a"]}),
              "bad layout": ("layout", {"kind": "npz", "path": npz, "layout": "chw"})}
    if name in fields:
        field, values = fields[name]
        values = {"kind": "imagefolder", "root": root, **values}
        if values["kind"] == "npz":
            values.pop("root")
        return OwnSuiteSpec(name="mine", **values), spec_file, field
    arrays = {
        "no npz": None,
        "not a zip": "text",
        "a npy": "npy",
        "missing images": {"labels": np.arange(3)},
        "missing labels": {"images": good},
        "images 2-D": {"images": np.zeros((3, 64), np.uint8), "labels": np.arange(3)},
        "images 4 channels": {"images": np.zeros((3, 8, 8, 4), np.uint8),
                              "labels": np.arange(3)},
        "ambiguous layout": {"images": np.zeros((3, 3, 3, 3), np.uint8), "labels": np.arange(3)},
        "labels out of range": {"images": good, "labels": np.array([0, 1, 2])},
        "labels out of file classes": {"images": good, "labels": np.array([0, 1, 2]),
                                       "classes": np.array(["a", "b"])},
        "labels wrong length": {"images": good, "labels": np.arange(4)},
        "float labels": {"images": good, "labels": np.array([0.0, 1.0, 0.0])},
        "NaN images": {"images": np.where(np.eye(8)[None] > 0, np.nan, 0.5).repeat(3, 0),
                       "labels": np.arange(3) % 2},
        "float images above 1": {"images": good + 2.0, "labels": np.arange(3) % 2},
        "int64 images": {"images": good.astype(np.int64), "labels": np.arange(3) % 2},
        "object classes": {"images": good, "labels": np.arange(3) % 2,
                           "classes": np.array(["a", "b"], dtype=object)},
        "file classes not in spec": {"images": good, "labels": np.arange(3) % 2,
                                     "classes": np.array(["a", "b"])},
    }[name]
    field = {"no npz": "path", "not a zip": "path", "a npy": "path", "missing images": "images",
             "missing labels": "labels", "ambiguous layout": "layout",
             "object classes": "classes", "file classes not in spec": "classes"}.get(
                 name, "labels" if "labels" in name else "images")
    if isinstance(arrays, dict):
        np.savez(npz, **arrays)
    elif arrays == "text":
        npz.write_text("images,labels\n")
    elif arrays == "npy":
        np.save(tmp / "d.npy", good)
        os.replace(tmp / "d.npy", npz)
    classes = ["a", "c"] if name == "file classes not in spec" else ["a", "b"]
    return spec("npz", path=npz, classes=classes), npz, field


BAD = ["empty folder", "no folder", "images but no class folders",
       "class folder missing from classes", "class without a folder",
       "class folder without images", "corrupt image", "truncated image", "not an image", "32-bit image",
       "sizes differ without size", "size one int", "size zero", "size text", "channels 2",
       "unknown kind", "duplicate classes", "bad layout", "no npz", "not a zip", "a npy",
       "missing images", "missing labels", "images 2-D", "images 4 channels",
       "ambiguous layout", "labels out of range", "labels out of file classes",
       "labels wrong length", "float labels", "NaN images", "float images above 1",
       "int64 images", "object classes", "file classes not in spec"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_line_naming_file_and_field(tmp_path, name):
    the_spec, file, field = _case(tmp_path, name)
    with pytest.raises(InputError) as info:
        load_own_suite(the_spec, spec_file=tmp_path / "pipeline.toml")
    text = str(info.value)
    assert "\n" not in text
    assert info.value.field == field and f"field '{field}'" in text
    assert Path(info.value.file) == file and text.startswith(f"{file}: ")
    if file.name == "pipeline.toml":
        assert [f for f, _ in own_spec_problems(the_spec)] == [field]


def test_messages_say_what_to_do(tmp_path):
    the_spec, _, _ = _case(tmp_path, "ambiguous layout")
    with pytest.raises(InputError, match=r'layout = "nhwc" or layout = "nchw"'):
        load_own_suite(the_spec)
    (tmp_path / "f").mkdir()
    the_spec, _, _ = _case(tmp_path / "f", "class folder missing from classes")
    with pytest.raises(InputError, match=re.escape("class folder 'c' is not in classes ['a', 'b']")):
        load_own_suite(the_spec)
