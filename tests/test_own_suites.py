"""Your own images as a suite (ml4ml.data.own): an ImageFolder of real PNG/JPEG/BMP files and
npz files in every layout, checked against a plain Pillow load + torchvision's antialiased
resize, torchvision's own ImageFolder order, the content digest, and a trained CNN5 probed
on the loaded suites against a plain torch loop (errors: test_own_suite_errors.py)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS as TV_EXTENSIONS
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import docblocks

from ml4ml.data.own import (IMG_EXTENSIONS, OwnSuiteSpec, load_own_suite, own_spec_problems,
                            own_suite_classes, suite_digest)
from ml4ml.data.suites import Suite, load_suite
from ml4ml.errors import InputError

PER_CLASS = 4
SIZES = [(28, 28), (40, 40), (64, 64), (20, 20), (24, 32)]      # (H, W) of the stored files
NAMES = [str(d) for d in range(10)]


# --- the data: real digits written as image files -----------------------------------------

@pytest.fixture(scope="module")
def digits_uint8():
    """PER_CLASS test-split digits of each class: (n, 28, 28) uint8, labels (n,)."""
    suite = load_suite("digits", "test")
    labels = suite.labels.numpy()
    pick = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)]))
    images = (suite.images[pick, 0].numpy() * 255).round().astype(np.uint8)
    return images, labels[pick]


def tint(grey: np.ndarray, i: int) -> np.ndarray:
    """(h, w) uint8 -> (h, w, 3) uint8: a different colour per image."""
    scale = np.array([1.0, 0.3 + 0.1 * (i % 7), 0.9 - 0.1 * (i % 5)])
    return (grey[..., None] * scale).round().clip(0, 255).astype(np.uint8)


def write_folder(root: Path, images, labels, *, varied: bool) -> Path:
    """One folder per class; varied: several sizes, formats, modes and a nested folder."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / NAMES[label]
        if varied and i % 9 == 4:
            folder = folder / "more"                              # walked like torchvision
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(image)
        if varied:
            h, w = SIZES[i % len(SIZES)]
            img = img.resize((w, h), Image.BICUBIC)
            if i % 6 == 1:
                img = Image.fromarray(tint(np.asarray(img), i))  # RGB file
            elif i % 10 == 9:
                img = img.convert("LA")
        name = f"img{i:03d}"
        if varied and i % 7 == 3:
            img.convert("RGB").save(folder / f"{name}.JPG", quality=90)
        elif varied and i % 11 == 5:
            (img if img.mode in ("L", "RGB") else img.convert("RGB")).save(
                folder / f"{name}.bmp")
        elif varied and i % 13 == 8:
            img.convert("RGB").convert("P").save(folder / f"{name}.png")
        else:
            img.save(folder / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory, digits_uint8):
    """clean: the varied folder; cluttered: the same plus what torchvision would misread;
    same20: every image 20x20 grey PNG; rgb20: the same images tinted, RGB PNG; small, rgb,
    labels: their pixels and labels in the folders' sample order."""
    images, labels = digits_uint8
    base = tmp_path_factory.mktemp("own")
    clean = write_folder(base / "clean", images, labels, varied=True)
    cluttered = base / "cluttered"
    shutil.copytree(clean, cluttered)
    (cluttered / ".ipynb_checkpoints").mkdir()
    Image.fromarray(images[0]).save(cluttered / ".ipynb_checkpoints" / "x.png")
    (cluttered / "3" / "._img000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (cluttered / "3" / "notes.txt").write_text("not an image")
    (cluttered / "5" / ".cache").mkdir()
    Image.fromarray(images[1]).save(cluttered / "5" / ".cache" / "y.png")
    small = np.stack([np.asarray(Image.fromarray(x).resize((20, 20), Image.BICUBIC))
                      for x in images])
    same20 = write_folder(base / "same20", small, labels, varied=False)
    rgb = np.stack([tint(x, i) for i, x in enumerate(small)])
    rgb20 = base / "rgb20"
    for i, (image, label) in enumerate(zip(rgb, labels)):
        (rgb20 / NAMES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(rgb20 / NAMES[label] / f"img{i:03d}.png")
    order = np.argsort(labels, kind="stable")          # the folders' sample order
    return {"base": base, "clean": clean, "cluttered": cluttered, "same20": same20,
            "rgb20": rgb20, "small": small[order], "rgb": rgb[order], "labels": labels[order]}


# --- the independent reference: torchvision's listing, Pillow, torchvision's resize -------

def pil_reference(paths, channels: int, size) -> torch.Tensor:
    """Each file as Pillow reads it -> /255 -> torchvision v2 resize(BILINEAR, antialias)."""
    out = []
    for path in paths:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L" if channels == 1 else "RGB"), np.float32) / 255
        x = torch.from_numpy(array.reshape(*array.shape[:2], channels)).permute(2, 0, 1)
        if size is not None and tuple(x.shape[1:]) != tuple(size):
            x = TF.resize(x.contiguous(), list(size), interpolation=InterpolationMode.BILINEAR,
                          antialias=True).clamp(0, 1)
        out.append(x)
    return torch.stack(out)


def spec(kind="imagefolder", **fields) -> OwnSuiteSpec:
    return OwnSuiteSpec(name="mine", kind=kind, **fields)


def test_extensions_are_torchvisions():
    assert IMG_EXTENSIONS == TV_EXTENSIONS


def test_spec_fields_and_their_checks():
    from ml4ml.data.own import OWN_FIELDS

    assert OWN_FIELDS == ("kind", "root", "path", "size", "channels", "classes", "layout",
                          "n_samples", "seed")
    good = OwnSuiteSpec(name="m", kind="imagefolder", root="r", size=[28, 28],
                        classes=["a", "b"])
    assert good.size == (28, 28) and good.classes == ("a", "b") and hash(good)
    assert own_spec_problems(good) == []
    bad = OwnSuiteSpec(name="m", kind="npz", root="r", size=[28, 28.0], n_samples=0, seed=-1,
                       channels=True, classes=[])
    assert [f for f, _ in own_spec_problems(bad)] == [
        "path", "root", "size", "channels", "classes", "n_samples", "seed"]


@pytest.mark.parametrize("channels", [1, 3])
def test_imagefolder_equals_torchvision_order_and_pil_load(folders, channels):
    suite = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=channels))
    reference = ImageFolder(str(folders["clean"]))           # torchvision's own listing
    paths = [p for p, _ in reference.samples]
    assert isinstance(suite, Suite) and suite.name == "mine" and suite.split == "test"
    assert len(paths) == 10 * PER_CLASS and suite.n_classes == 10
    assert reference.classes == NAMES
    assert suite.labels.dtype == torch.int64 and suite.labels.tolist() == reference.targets
    assert suite.images.dtype == torch.float32
    assert suite.images.shape == (len(paths), channels, 28, 28)
    expected = pil_reference(paths, channels, (28, 28))
    assert float((suite.images - expected).abs().max()) <= 1e-6
    assert float(suite.images.min()) >= 0.0 and float(suite.images.max()) <= 1.0
    # the files really are varied: sizes, modes and formats
    modes, sizes = set(), set()
    for path in paths:
        with Image.open(path) as img:
            modes.add(img.mode)
            sizes.add(img.size)
    assert {"L", "RGB", "LA", "P"} <= modes and len(sizes) == len(SIZES)
    assert {Path(p).suffix for p in paths} == {".png", ".JPG", ".bmp"}
    assert any("/more/" in p for p in paths)


def test_downsampling_is_antialiased_like_pillow(folders):
    """The 64x64 files shrunk to 28x28 agree with Pillow's own (antialiased) BILINEAR resize
    within its uint8 rounding; a resize without antialiasing is 10x further off."""
    suite = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1))
    paths = [p for p, _ in ImageFolder(str(folders["clean"])).samples]
    big = [i for i, p in enumerate(paths) if Image.open(p).size == (64, 64)]
    assert len(big) >= 5
    pillow = np.stack([np.asarray(Image.open(paths[i]).convert("L").resize(
        (28, 28), Image.BILINEAR), np.float32) / 255 for i in big])
    ours = suite.images[big, 0].numpy()
    assert np.abs(ours - pillow).max() <= 1 / 255 + 1e-6
    plain = np.stack([np.asarray(Image.open(paths[i]).convert("L"), np.float32) / 255
                      for i in big])
    aliased = F.interpolate(torch.from_numpy(plain)[:, None], size=(28, 28), mode="bilinear",
                            antialias=False)[:, 0].numpy()
    assert np.abs(aliased - pillow).max() > 10 / 255


@pytest.mark.parametrize("size", [(28, 28), (9, 40), (64, 20)])
def test_resize_is_torchvisions_antialiased_resize(size):
    from ml4ml.data.own_files import resize_images

    images = torch.rand(5, 3, 33, 47, generator=torch.Generator().manual_seed(0))
    ours = resize_images(images, size)
    for image, resized in zip(images, ours):
        expected = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR,
                             antialias=True).clamp(0, 1)
        assert torch.equal(resized, expected)
    assert resize_images(images, (33, 47)) is images


def test_hidden_entries_and_other_files_are_skipped(folders):
    clean = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1))
    cluttered = load_own_suite(spec(root=folders["cluttered"], size=[28, 28], channels=1))
    assert torch.equal(clean.images, cluttered.images)
    assert torch.equal(clean.labels, cluttered.labels) and cluttered.n_classes == 10
    # torchvision would take the hidden folder as an 11th class and ._img000.png as an image
    assert len(ImageFolder(str(folders["cluttered"]), allow_empty=True).classes) == 11
    named = load_own_suite(spec(root=folders["cluttered"], size=[28, 28], channels=1,
                                classes=NAMES + [".ipynb_checkpoints"]))
    assert named.n_classes == 11 and len(named) == len(clean) + 1    # named: then a class
    assert named.labels.tolist() == [10] + clean.labels.tolist()     # ".i" sorts first


def test_classes_give_the_model_order_not_the_sample_order(folders):
    names = NAMES[::-1]
    suite = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1,
                                classes=names))
    default = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1))
    assert torch.equal(suite.images, default.images)                # torchvision's order
    assert suite.labels.tolist() == [9 - t for t in default.labels.tolist()]
    assert own_suite_classes(spec(root=folders["clean"], classes=names)) == tuple(names)
    assert own_suite_classes(spec(root=folders["clean"])) == tuple(NAMES)


def test_size_none_keeps_uniform_sizes_and_relative_root(folders):
    suite = load_own_suite(spec(root="same20", channels=1), base_dir=folders["base"])
    paths = [p for p, _ in ImageFolder(str(folders["same20"])).samples]
    assert suite.images.shape == (10 * PER_CLASS, 1, 20, 20)
    assert torch.equal(suite.images, pil_reference(paths, 1, None))
    rgb = load_own_suite(spec(root=folders["same20"]))                # default: 3 channels
    assert rgb.images.shape[1] == 3 and torch.equal(rgb.images, suite.images.expand(-1, 3, -1, -1))


def test_n_samples_is_load_suites_subset_rule(folders):
    full = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1))
    part = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1,
                               n_samples=13, seed=5))
    keep = np.sort(np.random.RandomState(5).choice(len(full), 13, replace=False))
    assert torch.equal(part.images, full.images[keep])
    assert torch.equal(part.labels, full.labels[keep]) and part.n_classes == 10
    everything = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1,
                                     n_samples=1000))
    assert torch.equal(everything.images, full.images)


def test_sixteen_bit_greyscale_scales_to_the_full_range(tmp_path):
    values = (np.arange(36, dtype=np.uint16) * 1800 + 7).reshape(6, 6)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(values if c == "a" else values[::-1].copy()).save(tmp_path / c / "1.png")
    assert Image.open(tmp_path / "a" / "1.png").mode == "I;16"
    suite = load_own_suite(spec(root=tmp_path, channels=1))
    expected = values.astype(np.float32) / np.float32(65535)
    assert np.array_equal(suite.images[0, 0].numpy(), expected)
    assert np.array_equal(suite.images[1, 0].numpy(), expected[::-1])
    rgb = load_own_suite(spec(root=tmp_path, channels=3, size=[12, 12]))
    resized = TF.resize(torch.from_numpy(expected)[None], [12, 12], antialias=True).clamp(0, 1)
    assert float((rgb.images[0] - resized.expand(3, -1, -1)).abs().max()) <= 1e-6


# --- npz --------------------------------------------------------------------------------

def save_npz(path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


LAYOUTS = {
    "nhw": lambda a: a,
    "nhwc": lambda a: a[..., None],
    "nchw": lambda a: a[:, None],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_npz_grey_equals_the_same_images_as_pngs(folders, tmp_path, layout, dtype):
    small, labels = folders["small"], folders["labels"]
    images = LAYOUTS[layout](small)
    if dtype != "uint8":
        images = images.astype(dtype) / np.asarray(255, dtype)
    path = save_npz(tmp_path / "d.npz", images=images, labels=labels)
    suite = load_own_suite(spec("npz", path=path, size=[28, 28]))
    pngs = load_own_suite(spec(root=folders["same20"], size=[28, 28], channels=1))
    assert suite.images.shape == (len(labels), 1, 28, 28) and suite.n_classes == 10
    assert float((suite.images - pngs.images).abs().max()) <= 1e-6
    assert torch.equal(suite.labels, pngs.labels)
    assert suite.labels.dtype == torch.int64 and suite.images.dtype == torch.float32


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("channels", [1, 3])
def test_npz_rgb_equals_the_same_images_as_pngs(folders, tmp_path, layout, channels):
    rgb, labels = folders["rgb"], folders["labels"]
    images = rgb if layout == "nhwc" else rgb.transpose(0, 3, 1, 2)
    path = save_npz(tmp_path / "c.npz", images=images, labels=labels)
    suite = load_own_suite(spec("npz", path=path, size=[28, 28], channels=channels))
    pngs = load_own_suite(spec(root=folders["rgb20"], size=[28, 28], channels=channels))
    assert suite.images.shape == (len(labels), channels, 28, 28)
    assert torch.equal(suite.images, pngs.images)    # 3 -> 1: Pillow's luma, bit for bit
    float_path = save_npz(tmp_path / "f.npz", images=images.astype(np.float32) / 255,
                          labels=labels)
    floats = load_own_suite(spec("npz", path=float_path, size=[28, 28], channels=channels))
    assert float((floats.images - pngs.images).abs().max()) <= (1e-6 if channels == 3
                                                                 else 0.5 / 255 + 1e-6)


def test_npz_explicit_layout_for_an_ambiguous_shape(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (4, 3, 5, 3)).astype(np.uint8)
    path = save_npz(tmp_path / "a.npz", images=images, labels=np.arange(4))
    nchw = load_own_suite(spec("npz", path=path, layout="nchw"))
    nhwc = load_own_suite(spec("npz", path=path, layout="nhwc"))
    assert torch.equal(nchw.images, torch.from_numpy(images).float() / 255)
    assert torch.equal(nhwc.images, torch.from_numpy(images.transpose(0, 3, 1, 2)).float() / 255)


def test_npz_classes_in_the_file_and_the_spec(folders, tmp_path):
    small, labels = folders["small"], folders["labels"]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    path = save_npz(tmp_path / "n.npz", images=small, labels=labels, classes=names)
    assert own_suite_classes(spec("npz", path=path)) == tuple(names)
    plain = load_own_suite(spec("npz", path=path))
    assert torch.equal(plain.labels, torch.from_numpy(labels.astype(np.int64)))
    order = ["nine", "eight", "seven", "six", "five", "four", "three", "two", "one", "zero"]
    mapped = load_own_suite(spec("npz", path=path, classes=order))
    assert mapped.labels.tolist() == [order.index(names[t]) for t in labels]
    assert torch.equal(mapped.images, plain.images) and mapped.n_classes == 10
    bare = save_npz(tmp_path / "b.npz", images=small[labels < 7], labels=labels[labels < 7])
    assert own_suite_classes(spec("npz", path=bare)) == tuple(str(i) for i in range(7))
    assert load_own_suite(spec("npz", path=bare, classes=NAMES)).n_classes == 10


# --- the content digest -------------------------------------------------------------------

def test_digest_notices_a_pixel_a_rename_and_the_parameters(folders, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(folders["same20"], root)
    the_spec = spec(root=root, size=[28, 28], channels=1)
    first = suite_digest(the_spec)
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert suite_digest(the_spec) == first                       # nothing changed
    target = sorted((root / "4").glob("*.png"))[1]
    os.utime(target, (1, 1))
    assert suite_digest(the_spec) == first                       # times are no content
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert suite_digest(spec(root=moved, size=[28, 28], channels=1)) == first
    pixels = np.asarray(Image.open(target)).copy()
    pixels[3, 5] ^= 1
    Image.fromarray(pixels).save(target)
    changed = suite_digest(the_spec)
    assert changed != first
    target.rename(target.with_name("renamed.png"))
    renamed = suite_digest(the_spec)
    assert renamed not in (first, changed)
    others = {suite_digest(spec(root=root, size=[28, 29], channels=1)),
              suite_digest(spec(root=root, size=[28, 28], channels=3)),
              suite_digest(spec(root=root, size=[28, 28], channels=1, n_samples=5)),
              suite_digest(spec(root=root, size=[28, 28], channels=1, classes=NAMES[::-1]))}
    assert len(others) == 4 and renamed not in others
    (root / "4" / "notes.txt").write_text("not an image")
    assert suite_digest(the_spec) == renamed                     # only what is loaded counts


def test_digest_of_an_npz(folders, tmp_path):
    small, labels = folders["small"], folders["labels"]
    path = save_npz(tmp_path / "d.npz", images=small, labels=labels)
    first = suite_digest(spec("npz", path=path))
    assert suite_digest(spec("npz", path="d.npz"), tmp_path) == first
    changed = small.copy()
    changed[0, 0, 0] ^= 1
    save_npz(path, images=changed, labels=labels)
    assert suite_digest(spec("npz", path=path)) != first
    with pytest.raises(InputError, match="field 'path'"):
        suite_digest(spec("npz", path=tmp_path / "none.npz"))


# --- end to end: a trained CNN5 probed on the loaded suites ---------------------------------

NORMALIZE = (0.5, 0.25)


@pytest.fixture(scope="module")
def cnn5(one_thread):
    """ml4ml's CNN5 trained 3 epochs on the digits train split (plain torch loop)."""
    from ml4ml.zoo.architectures import build_model

    train = load_suite("digits", "train")
    torch.manual_seed(0)
    model = build_model("cnn5", num_classes=10, in_channels=1, image_size=28)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        order = torch.randperm(len(train), generator=generator)
        for first in range(0, len(train), 32):
            index = order[first:first + 32]
            x = (train.images[index] - NORMALIZE[0]) / NORMALIZE[1]
            loss = F.cross_entropy(model(x), train.labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def plain_probabilities(model, images: torch.Tensor, angles) -> np.ndarray:
    """(aug_param, sample, class): softmax(model(normalize(rotate(x)))) image by image."""
    out = np.zeros((len(angles), len(images), 10), np.float32)
    with torch.no_grad():
        for a, angle in enumerate(angles):
            for s, image in enumerate(images):
                x = TF.rotate(image, float(angle), interpolation=InterpolationMode.NEAREST,
                              fill=0)
                logits = model(((x - NORMALIZE[0]) / NORMALIZE[1])[None])
                out[a, s] = torch.softmax(logits, dim=1)[0].numpy()
    return out


@pytest.mark.parametrize("kind", ["imagefolder", "npz"])
def test_probing_a_trained_cnn5_equals_a_plain_torch_loop(folders, tmp_path, cnn5, kind):
    from ml4ml import probe_model

    listing = ImageFolder(str(folders["clean"]))
    paths = [p for p, _ in listing.samples]
    files = [np.asarray(Image.open(p).convert("L").resize((20, 20), Image.BICUBIC))
             for p in paths]
    if kind == "imagefolder":
        suite = load_own_suite(spec(root=folders["clean"], size=[28, 28], channels=1))
        reference_images = pil_reference(paths, 1, (28, 28))
    else:                                 # the PIL-loaded files, stored (n, c, h, w) uint8
        path = save_npz(tmp_path / "p.npz", images=np.stack(files)[:, None],
                        labels=np.array(listing.targets))
        suite = load_own_suite(spec("npz", path=path, size=[28, 28], classes=NAMES))
        reference_images = torch.stack([TF.resize(
            torch.from_numpy(np.asarray(f, np.float32) / 255)[None], [28, 28],
            interpolation=InterpolationMode.BILINEAR, antialias=True).clamp(0, 1)
            for f in files])
    assert suite.labels.tolist() == listing.targets
    angles = np.linspace(-30.0, 30.0, 7)
    probed = probe_model(cnn5, suite.images, suite.labels, "rotation", angles,
                         normalize=NORMALIZE)
    expected = plain_probabilities(cnn5, reference_images, angles)
    prob = probed["prob"].transpose("aug_param", "sample", "class").values
    assert prob.shape == expected.shape
    assert np.abs(prob - expected).max() <= 1e-6
    assert probed["label"].values.tolist() == suite.labels.tolist()
    accuracy = (expected[3].argmax(1) == suite.labels.numpy()).mean()
    assert accuracy >= 0.7            # labels follow the model's classes: a real digit model


# --- the example of docs/data.md, as written ------------------------------------------------

def test_the_own_images_example_runs(folders, tmp_path, monkeypatch, one_thread):
    shutil.copytree(folders["same20"], tmp_path / "my_digits")
    np.savez(tmp_path / "my_digits.npz", images=folders["small"], labels=folders["labels"])
    monkeypatch.chdir(tmp_path)
    namespace = {}
    (block,) = docblocks.marked("test_own_suites.py::test_the_own_images_example_runs")
    exec(compile(block.code, block.path, "exec"), namespace)
    suite, suite_npz, probes = namespace["suite"], namespace["suite_npz"], namespace["probes"]
    assert suite.images.shape == (10 * PER_CLASS, 1, 28, 28) and suite.n_classes == 10
    assert torch.equal(suite.images, suite_npz.images)
    assert torch.equal(suite.labels, suite_npz.labels)
    assert probes["prob"].sizes == {"aug_param": 3, "sample": 10 * PER_CLASS, "class": 10}
