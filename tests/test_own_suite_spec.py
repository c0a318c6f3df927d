"""Your own images as a suite in a pipeline spec (issue 28.1): ``[suites.NAME] kind =
"imagefolder"`` / ``"npz"`` validated, probed with the stored probabilities equal to a plain
torch loop over the same PIL-loaded images, bad input refused in one line naming the file
and the field with the store untouched, and a changed folder re-probed (lineage)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import docblocks
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_added_models import NET  # the same small CNN

from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.data.own import OwnSuiteSpec, suite_digest
from ml4ml.data.suites import load_suite

MEAN, STD = 0.5, 0.25
SIDE = 20           # the files' own size; the spec resizes to 28 x 28
PER_CLASS = 2
GRID = "grid = [-20, 20, 3]"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _net(namespace, num_classes=10):
    return namespace["Net"](num_classes=num_classes)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small CNN trained on digits with plain torch (its state dict), the digits test
    images as uint8 at 20 x 20: a PNG folder (0/..9/), an npz (n, h, w, 1) and an npz
    (n, 3, h, w) of the same images."""
    folder = tmp_path_factory.mktemp("own")
    (folder / "mynets.py").write_text(NET)
    namespace = {}
    exec(NET, namespace)
    train = load_suite("digits", "train")
    torch.manual_seed(0)
    net = _net(namespace)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(net((train.images[:256] - MEAN) / STD),
                                                 train.labels[:256])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    torch.save(net.state_dict(), folder / "net.pt")
    test = load_suite("digits", "test")
    picks = np.concatenate([np.flatnonzero(test.labels.numpy() == c)[:PER_CLASS]
                            for c in range(10)])
    small = torch.nn.functional.interpolate(test.images[picks], size=[SIDE, SIDE],
                                            mode="bilinear", antialias=True)
    pixels = (small[:, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)  # (n, h, w)
    labels = test.labels.numpy()[picks]
    for k, (image, label) in enumerate(zip(pixels, labels)):
        (folder / "pngs" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / "pngs" / str(label) / f"{k:03d}.png")
    np.savez(folder / "hwc.npz", images=pixels[..., None], labels=labels)
    rgb = np.stack([pixels, np.roll(pixels, 1, axis=2), pixels // 2], axis=1)  # (n, 3, h, w)
    np.savez(folder / "chw.npz", images=rgb, labels=labels)
    return folder, namespace, net


def spec_text(suites: str, store_name="own.zarr") -> str:
    return f"""
name = "own"
[store]
path = "{store_name}"
{suites}
[transforms.rotation]
{GRID}
[[zoo.models]]
mid = "net"
checkpoint = "net.pt"
arch = "module:mynets:Net"
normalize_mean = [{MEAN}]
normalize_std = [{STD}]
"""


SUITES = """
[suites.pngs]
kind = "imagefolder"
root = "pngs"
size = [28, 28]
channels = 1
[suites.hwc]
kind = "npz"
path = "hwc.npz"
size = [28, 28]
[suites.chw]
kind = "npz"
path = "chw.npz"
size = [28, 28]
channels = 1
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
"""


def write_spec(folder: Path, suites: str, name="own.toml", store_name="own.zarr") -> Path:
    spec = folder / name
    spec.write_text(spec_text(suites, store_name))
    return spec


def pil_images(folder: Path, suite: str) -> tuple[list, np.ndarray]:
    """The suite's images as PIL greyscale images (in ImageFolder order) and labels."""
    if suite == "pngs":
        files = sorted((folder / "pngs").glob("*/*.png"), key=lambda p: (p.parent.name, p.name))
        return ([Image.open(f).convert("L") for f in files],
                np.array([int(f.parent.name) for f in files]))
    arrays = np.load(folder / f"{suite}.npz")
    images = arrays["images"]
    if suite == "hwc":
        return [Image.fromarray(i[..., 0], "L") for i in images], arrays["labels"]
    return ([Image.fromarray(np.ascontiguousarray(i.transpose(1, 2, 0)), "RGB").convert("L")
             for i in images], arrays["labels"])


def plain_probabilities(net, images) -> np.ndarray:
    """A plain torch loop: PIL image -> [0, 1] -> antialiased resize to 28 -> normalised ->
    softmax, one image at a time."""
    out = []
    with torch.no_grad():
        for image in images:
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None, None]
            x = torch.nn.functional.interpolate(x, size=[28, 28], mode="bilinear",
                                                align_corners=False, antialias=True).clamp(0, 1)
            out.append(torch.softmax(net((x - MEAN) / STD), dim=1)[0].numpy())
    return np.stack(out)


def stored_identity(path, suite) -> tuple[np.ndarray, np.ndarray]:
    ds = store.open_probes(path, suite, "rotation")
    prob = ds[dims.PROB].sel({dims.MID: "net", dims.AUG_PARAM: 0.0}).values
    return prob, ds[dims.LABEL].values


def files_of(path: Path) -> dict:
    """{relative path: bytes} of every file under ``path`` (a store untouched: the same)."""
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*"))
            if f.is_file()}


def test_own_suites_probe_as_a_plain_torch_loop(world, tmp_path):
    folder, _, net = world
    spec = write_spec(folder, SUITES, "probe.toml", "probe.zarr")
    result = run("validate", spec)
    assert result.exit_code == 0, result.output
    assert "pngs (10 classes), hwc (10 classes), chw (10 classes)" in result.output
    result = run("train", spec)
    assert result.exit_code == 0, result.output
    result = run("probe", spec)
    assert result.exit_code == 0, result.output
    assert "probe: 1 probed, 0 already" in result.output, result.output
    path = folder / "probe.zarr"
    for suite in ("pngs", "hwc", "chw"):
        images, labels = pil_images(folder, suite)
        prob, stored_labels = stored_identity(path, suite)
        assert prob.shape == (10 * PER_CLASS, 10)
        np.testing.assert_array_equal(stored_labels, labels)
        np.testing.assert_allclose(prob, plain_probabilities(net, images), rtol=0, atol=1e-6)
        ds = store.open_probes(path, suite, "rotation")
        assert bool(ds[dims.DONE].sel({dims.MID: "net"})), suite
        # lineage: the suite's content digest, as data.own computes it
        own = OwnSuiteSpec(name=suite, kind="imagefolder" if suite == "pngs" else "npz",
                           root=folder / "pngs" if suite == "pngs" else None,
                           path=None if suite == "pngs" else folder / f"{suite}.npz",
                           size=(28, 28), channels=None if suite == "hwc" else 1,
                           classes=tuple(str(d) for d in range(10)) if suite == "chw" else None)
        assert ds.attrs[store.SUITE_DIGEST] == suite_digest(own)
    # the 3-channel npz and the PNGs are the same digits: different pixels (rolled, halved
    # channels mixed by luma), so a real conversion happened
    assert not np.allclose(stored_identity(path, "chw")[0], stored_identity(path, "pngs")[0])
    np.testing.assert_array_equal(stored_identity(path, "hwc")[0],
                                  stored_identity(path, "pngs")[0])
    assert json.loads(json.dumps(store.recorded_suites(path)["pngs"])) == [[1, 28, 28], 10]
    again = run("probe", spec)
    assert again.exit_code == 0 and "0 probed, 1 already" in again.output, again.output


def probed_png_store(folder: Path, base: Path) -> tuple[Path, Path]:
    """A copy of the PNG folder, the model and its module in ``base``, with a spec of the
    PNG suite alone, added and probed: (spec, store)."""
    shutil.copytree(folder / "pngs", base / "pngs")
    (base / "net.pt").write_bytes((folder / "net.pt").read_bytes())
    (base / "mynets.py").write_text(NET)
    spec = write_spec(base, SUITES.split("[suites.hwc]")[0])
    assert run("train", spec).exit_code == 0
    assert run("probe", spec).exit_code == 0
    return spec, base / "own.zarr"


def test_a_changed_folder_is_reprobed(world, tmp_path):
    folder, _, net = world
    root = tmp_path / "pngs"
    spec, path = probed_png_store(folder, tmp_path)
    before, _ = stored_identity(path, "pngs")
    digest = store.open_probes(path, "pngs", "rotation").attrs[store.SUITE_DIGEST]
    # one image changes its pixels (same name, same count)
    changed = sorted(root.glob("3/*.png"))[0]
    Image.fromarray(255 - np.asarray(Image.open(changed)), "L").save(changed)
    result = run("probe", spec)
    assert result.exit_code == 0, result.output
    assert "re-probing net: the images of suite 'pngs' changed" in result.output
    assert "1 probed" in result.output
    after, _ = stored_identity(path, "pngs")
    images, _ = pil_images(tmp_path, "pngs")
    np.testing.assert_allclose(after, plain_probabilities(net, images), rtol=0, atol=1e-6)
    position = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.png")).index(
        changed.relative_to(root).as_posix())
    assert not np.allclose(after[position], before[position])
    keep = np.arange(len(after)) != position
    np.testing.assert_array_equal(after[keep], before[keep])
    assert store.open_probes(path, "pngs", "rotation").attrs[store.SUITE_DIGEST] != digest


def _bad_cases(base: Path) -> dict:
    """name -> (suites table, the file the line must name, the field it must name)."""
    (base / "empty").mkdir()
    (base / "junk" / "0").mkdir(parents=True)
    (base / "junk" / "1").mkdir(parents=True)
    Image.new("L", (8, 8), 5).save(base / "junk" / "0" / "a.png")
    (base / "junk" / "1" / "b.png").write_bytes(b"not a png at all")
    np.savez(base / "flat.npz", images=np.zeros((4, 64), np.uint8), labels=np.zeros(4, int))
    np.savez(base / "range.npz", images=np.zeros((4, 8, 8), np.uint8),
             labels=np.array([0, 1, 2, 12]), classes=np.array([str(d) for d in range(10)]))
    three = base / "three"
    for c in "abc":
        (three / c).mkdir(parents=True)
        Image.new("L", (28, 28), 100).save(three / c / "x.png")
    return {
        "empty folder": ('kind = "imagefolder"\nroot = "empty"', base / "empty", "root"),
        "class folder missing from classes": (
            'kind = "imagefolder"\nroot = "pngs"\nchannels = 1\nsize = [28, 28]\n'
            'classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8"]',
            base / "pngs" / "9", "classes"),
        "unreadable image": ('kind = "imagefolder"\nroot = "junk"\nchannels = 1\n'
                             'size = [28, 28]',
                             base / "junk" / "1" / "b.png", "root"),
        "wrong array shape": ('kind = "npz"\npath = "flat.npz"', base / "flat.npz", "images"),
        "labels out of range": ('kind = "npz"\npath = "range.npz"\nsize = [28, 28]',
                                base / "range.npz", "labels"),
        "class-count mismatch": ('kind = "imagefolder"\nroot = "three"\nchannels = 1',
                                 base / "bad.toml", "suites.bad.classes"),
    }


def test_bad_own_suites_are_one_line_and_leave_the_store_untouched(world, tmp_path):
    folder, _, _ = world
    base = tmp_path
    _, path = probed_png_store(folder, base)
    untouched = files_of(path)
    for name, (table, file, field) in _bad_cases(base).items():
        spec = base / "bad.toml"
        spec.write_text(spec_text(SUITES.split("[suites.hwc]")[0] + "[suites.bad]\n" + table))
        # the model was added by the good spec; this one probes it on the bad suite too
        outcomes = [run("probe", spec)]
        if name not in ("unreadable image", "class-count mismatch"):  # need decoding/model
            outcomes.append(run("validate", spec))
        for result in outcomes:
            assert result.exit_code != 0, (name, result.output)
            lines = result.output.strip().splitlines()
            assert len(lines) <= 2 and "Traceback" not in result.output, (name, result.output)
            first = lines[0]
            assert str(file) in first, (name, first)
            assert f"'{field}'" in first or f"field {field}" in first \
                or f"{field}:" in first, (name, first)
            assert "bad" in first, (name, first)
            if name == "class-count mismatch":
                assert "model 'net' has 10 outputs but suite 'bad' has 3 classes" in first
        assert files_of(path) == untouched, name


def test_spec_fields_are_checked_in_one_line(world, tmp_path):
    for table, field, why in (
            ('kind = "folder"\nroot = "x"', "suites.mine.kind", "'imagefolder' or 'npz'"),
            ('kind = "npz"', "suites.mine.path", "needs path"),
            ('kind = "imagefolder"\nroot = "x"\npath = "y.npz"', "suites.mine.path",
             "takes root, not path"),
            ('kind = "imagefolder"\nroot = "x"\nsize = [28]', "suites.mine.size", "[H, W]"),
            ('kind = "imagefolder"\nroot = "x"\nchannels = 2', "suites.mine.channels", "1 or 3"),
            ('kind = "imagefolder"\nroot = "x"\nclasses = ["a", "a"]', "suites.mine.classes",
             "twice"),
            ('kind = "imagefolder"\nroot = "x"\nsplit = "train"', "suites.mine.split", "test"),
            ('root = "x"', "suites.mine.kind", "kind = \"imagefolder\""),
            ('kind = "npz"\npath = "x.npz"\nlayout = "hwc"', "suites.mine.layout", "'nhwc'")):
        spec = tmp_path / "s.toml"
        spec.write_text(spec_text(f"[suites.mine]\n{table}"))
        result = run("validate", spec)
        assert result.exit_code != 0
        line = result.output.strip().splitlines()[0]
        assert str(spec) in line and f"'{field}'" in line and why in line, (table, line)
    spec.write_text(spec_text('[suites.digits]\nkind = "npz"\npath = "x.npz"'))
    assert "name your own images otherwise" in run("validate", spec).output
    spec.write_text(spec_text('[suites.digits]\nroot = "x"'))
    assert "not built-in suite 'digits'" in run("validate", spec).output


def test_the_spec_example_validates(world, tmp_path):
    folder, _, _ = world
    (tmp_path / "my_digits").symlink_to(folder / "pngs")
    (tmp_path / "my_digits.npz").symlink_to(folder / "hwc.npz")
    (tmp_path / "net.pt").write_bytes((folder / "net.pt").read_bytes())
    (tmp_path / "mynets.py").write_text(NET)
    for block in docblocks.marked("test_own_suite_spec.py::test_the_spec_example_validates"):
        spec = tmp_path / "example.toml"
        spec.write_text(block.code)
        result = run("validate", spec)
        assert result.exit_code == 0, (block.where(), result.output)
        cwd = os.getcwd()
        try:
            os.chdir(tmp_path)
            result = run("train", spec)
            assert result.exit_code == 0, result.output
            result = run("probe", spec)
            assert result.exit_code == 0, result.output
        finally:
            os.chdir(cwd)
