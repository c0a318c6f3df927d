"""Readers behind ``ml4ml.data.own``: the ImageFolder listing and decoding, the npz arrays,
and the shared image steps (subset, channels, resize). Rules: ``ml4ml.data.own``'s docstring.

Every bad input raises ``InputError`` naming the file and the field (``root``, ``path``,
``classes``, ``size``, or the npz array: ``images``, ``labels``, ``classes``).
"""

from __future__ import annotations

import functools
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ml4ml.errors import InputError

# torchvision.datasets.folder.IMG_EXTENSIONS (checked equal in the tests)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DECODE_CHUNK = 256          # images decoded, then resized, at a time: bounds the memory
RESIZE_CHUNK = 4096         # npz images converted and resized at a time
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# Pillow's convert("L") from RGB: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
_LUMA = (19595, 38470, 7471)


def workers() -> int:
    """Threads that decode or hash files (Pillow and hashlib release the GIL)."""
    return max(1, min(8, os.cpu_count() or 1))


# --- shared image steps ------------------------------------------------------------------

def subset_index(n: int, n_samples, seed: int) -> np.ndarray:
    """Indices kept of ``n`` samples: ``load_suite``'s rule (all, or a sorted seeded subset)."""
    if n_samples is None or n_samples >= n:
        return np.arange(n)
    return np.sort(np.random.RandomState(seed).choice(n, n_samples, replace=False))


def resize_images(images: torch.Tensor, size) -> torch.Tensor:
    """(n_samples, channel, h, w) float32 in [0, 1] -> (n_samples, channel, H, W).

    ``torchvision.transforms.v2.functional.resize(images, [H, W], BILINEAR,
    antialias=True)``, clamped to [0, 1]: for float images that is the call below (without
    importing torchvision's transforms, seconds on a busy machine); the tests compare the
    two. Unchanged (the same tensor) when ``size`` is None or already (h, w).
    """
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    out = torch.nn.functional.interpolate(
        images.contiguous(), size=[int(size[0]), int(size[1])], mode="bilinear",
        align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def to_float_images(batch: np.ndarray) -> torch.Tensor:
    """(n, h, w, c) uint8 (scaled by 1/255) or float -> contiguous (n, c, h, w) float32."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0).contiguous()
    return x.to(torch.float32).contiguous()


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(n, h, w, c) -> (n, h, w, channels) as Pillow converts: 1 -> 3 repeats the channel,
    3 -> 1 is Pillow's ``convert("L")`` luma (its integer arithmetic on uint8)."""
    have = images.shape[3]
    if have == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=3)
    r, g, b = (images[..., i] for i in range(3))
    if images.dtype == np.uint8:
        luma = (r.astype(np.uint32) * _LUMA[0] + g.astype(np.uint32) * _LUMA[1]
                + b.astype(np.uint32) * _LUMA[2] + 0x8000) >> 16
        return luma.astype(np.uint8)[..., None]
    luma = (r.astype(np.float64) * _LUMA[0] + g * float(_LUMA[1]) + b * float(_LUMA[2])) / 65536
    return np.clip(luma, 0.0, 1.0).astype(np.float32)[..., None]


def check_file(path: Path, field: str, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} does not exist", file=path, field=field)
    if not path.is_file():
        raise InputError(f"{what} is not a file", file=path, field=field)


# --- imagefolder -------------------------------------------------------------------------

def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()                   # follows symlinks, as torchvision's does
    except OSError:
        return False


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def folder_listing(spec, root: Path) -> tuple[tuple, list]:
    """``(classes, [(image path, label), ...])`` of an ImageFolder ``root``, the samples in
    torchvision's order (class folders by sorted name, then sorted walk, sorted names)."""
    if not root.exists():
        raise InputError("the image folder does not exist", file=root,
                         field="root")
    if not root.is_dir():
        raise InputError("root must be a folder holding one folder per "
                         "class, found a file", file=root, field="root")
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise InputError(f"cannot list the folder ({exc.strerror or exc})",
                         file=root, field="root") from exc
    dirs = {e.name for e in entries if _is_dir(e)}
    folders = sorted(d for d in dirs if not d.startswith("."))
    if not folders and spec.classes is None:
        images = sum(1 for e in entries if not _is_dir(e) and is_image_name(e.name))
        found = (f"found {images} image{'s' if images > 1 else ''} directly in it" if images
                 else "it is empty" if not entries
                 else f"found {len(entries)} entries, none a class folder")
        raise InputError(
            f"no class folders in the image folder ({found})", file=root,
            field="root", hint="the ImageFolder layout puts each class's images in a folder "
                               "named after the class: root/cat/1.png, root/dog/2.png",
        )
    classes = tuple(spec.classes) if spec.classes is not None else tuple(folders)
    extra = [f for f in folders if f not in classes]
    if extra:
        others = f" (also {', '.join(repr(f) for f in extra[1:])})" if extra[1:] else ""
        raise InputError(
            f"class folder {extra[0]!r} is not in classes "
            f"{list(classes)}{others}", file=root / extra[0], field="classes",
            hint="add its name to classes, or move the folder out of root",
        )
    missing = [c for c in classes if c not in dirs]
    if missing:
        raise InputError(
            f"classes names {missing[0]!r} but the image folder has no "
            f"folder of that name (its class folders: {folders})", file=root / missing[0],
            field="classes", hint="every name in classes needs a folder of images",
        )
    index = {name: i for i, name in enumerate(classes)}
    files = []
    for name in sorted(classes):
        found = _class_images(root / name)
        if not found:
            raise InputError(
                f"class folder {name!r} holds no images (accepted: "
                f"{' '.join(IMG_EXTENSIONS)})", file=root / name, field="root",
            )
        files += [(path, index[name]) for path in found]
    return classes, files


def _class_images(top: Path) -> list[Path]:
    """torchvision's ``make_dataset`` order below one class folder, hidden entries skipped."""
    walked = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        walked.append((dirpath, filenames))
    walked.sort(key=lambda item: item[0])
    return [Path(dirpath, f) for dirpath, filenames in walked for f in sorted(filenames)
            if is_image_name(f)]


def read_image(path: Path, channels: int) -> np.ndarray:
    """One image file -> (h, w, channels) uint8, or float32 in [0, 1] for 16-bit greyscale."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            mode = img.mode
            if mode in ("I", "F"):
                raise InputError(
                    f"mode {mode!r} images (32-bit integer or float) have no fixed range",
                    file=path, field="root", hint="save it as 8- or 16-bit, or put the images "
                    "in an npz suite as floats in [0, 1]")
            if mode in _SIXTEEN_BIT:            # Pillow's convert("L") would clip at 255
                array = np.asarray(img).astype(np.float32) / np.float32(65535)
                return np.repeat(array[..., None], channels, axis=2)
            array = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise InputError("unreadable image: not an image file Pillow can read", file=path,
                         field="root") from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ...
        raise InputError(f"unreadable or corrupt image ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())})", file=path, field="root") from exc
    return array[..., None] if array.ndim == 2 else array


def decode_images(paths: list, channels: int, size) -> torch.Tensor:
    """Image files -> (n_samples, channels, H, W) float32 in [0, 1], resized to ``size``
    (None: the first image's size, which every other must have)."""
    out, target = None, None
    read = functools.partial(read_image, channels=channels)
    with ThreadPoolExecutor(workers()) as pool:
        for start in range(0, len(paths), DECODE_CHUNK):
            part = paths[start:start + DECODE_CHUNK]
            arrays = list(pool.map(read, part))          # the first failure, in file order
            if out is None:
                target = tuple(size) if size is not None else arrays[0].shape[:2]
                out = torch.empty((len(paths), channels, *target), dtype=torch.float32)
            groups = {}
            for i, array in enumerate(arrays):
                groups.setdefault((array.shape, array.dtype.str), []).append(i)
            for (shape, _), idx in groups.items():
                if size is None and shape[:2] != target:
                    raise InputError(
                        f"image is {shape[0]}x{shape[1]} but {paths[0]} is "
                        f"{target[0]}x{target[1]}; images of different sizes need size",
                        file=part[idx[0]], field="size",
                        hint="set size = [H, W] to resize every image to H x W")
                batch = to_float_images(np.stack([arrays[i] for i in idx]))
                out[start + torch.as_tensor(idx)] = resize_images(batch, target)
    return out


def load_imagefolder(spec, root: Path):
    """-> images (n, C, H, W) float32, labels (n,) int64, classes."""
    classes, files = folder_listing(spec, root)
    keep = subset_index(len(files), spec.n_samples, spec.seed)
    labels = torch.as_tensor([files[i][1] for i in keep], dtype=torch.int64)
    images = decode_images([files[i][0] for i in keep], spec.channels or 3, spec.size)
    return images, labels, classes


# --- npz ---------------------------------------------------------------------------------

def read_npz(path: Path, keys=("images", "labels", "classes")) -> dict:
    """The arrays ``keys`` (``images`` and ``labels`` required) of an npz file."""
    check_file(path, "path", "the .npz file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", file=path,
                         field="path") from exc
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise InputError("not a .npz archive (no zip signature at its start)", file=path,
                         field="path", hint="numpy.savez(path, images=images, labels=labels)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a .npz archive numpy can read ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())})", file=path, field="path") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError("expected a .npz archive of arrays images and labels, found a single "
                         "array (.npy)", file=path, field="path",
                         hint="numpy.savez(path, images=images, labels=labels)")
    with data:
        for key in ("images", "labels"):
            if key in keys and key not in data.files:
                raise InputError(f"the file has no array {key!r} (it holds {data.files})",
                                 file=path, field=key,
                                 hint="numpy.savez(path, images=images, labels=labels)")
        out = {}
        for key in keys:
            if key not in data.files:
                continue
            try:
                out[key] = data[key]
            except Exception as exc:  # object arrays (pickles) refused, damaged members
                raise InputError(
                    f"array {key!r} cannot be read ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())})", file=path, field=key,
                    hint="arrays must be plain numbers (strings for classes: "
                         "numpy.array(names, dtype=str)); object arrays are not loaded",
                ) from exc
    return out


def nhwc_images(images: np.ndarray, layout, path: Path) -> np.ndarray:
    """``images`` as (n, h, w, c), c 1 or 3, detecting the channel axis of a 4-D array."""
    shape = tuple(images.shape)
    forms = "(n, h, w), (n, h, w, c) or (n, c, h, w) with c 1 or 3"
    if images.ndim == 3:
        if layout is not None:
            raise InputError(f"layout applies to 4-D images; these are (n, h, w) = {shape}",
                             file=path, field="layout", hint="remove layout")
        images = images[..., None]
    elif images.ndim == 4:
        last, second = shape[3] in (1, 3), shape[1] in (1, 3)
        if layout is None:
            if last and second:
                raise InputError(
                    f"images of shape {shape} could be (n, h, w, c) or (n, c, h, w)",
                    file=path, field="layout", hint='say which with layout = "nhwc" or '
                                                    'layout = "nchw"')
            if not (last or second):
                raise InputError(f"images must be {forms}; found shape {shape}", file=path,
                                 field="images")
            layout = "nhwc" if last else "nchw"
        if not (last if layout == "nhwc" else second):
            raise InputError(f"layout {layout!r} needs 1 or 3 channels on axis "
                             f"{3 if layout == 'nhwc' else 1}; images have shape {shape}",
                             file=path, field="layout")
        if layout == "nchw":
            images = images.transpose(0, 2, 3, 1)
    else:
        raise InputError(f"images must be {forms}; found shape {shape}", file=path,
                         field="images")
    if min(images.shape[:3]) < 1:
        raise InputError(f"images must hold at least one image of at least 1x1 pixels; found "
                         f"shape {shape}", file=path, field="images")
    return images


def check_image_values(images: np.ndarray, path: Path) -> None:
    """uint8, or float with every value finite and in [0, 1]."""
    if images.dtype == np.uint8:
        return
    if images.dtype.kind != "f":
        raise InputError(f"images must be uint8 (0..255) or float in [0, 1]; found "
                         f"{images.dtype}", file=path, field="images",
                         hint="images.astype(numpy.uint8) for 0..255 values")
    finite = np.isfinite(images)
    if not finite.all():
        first = int(np.argwhere(~finite)[0][0])
        raise InputError(f"images hold NaN or infinite values (first in image {first})",
                         file=path, field="images")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise InputError(f"float images must lie in [0, 1]; found {low:g}..{high:g}",
                         file=path, field="images",
                         hint="divide 0..255 values by 255, or save them as uint8")


def _check_labels(labels: np.ndarray, n: int, path: Path) -> None:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(f"labels must be ({n},), one per image; found shape "
                         f"{tuple(labels.shape)}", file=path, field="labels")
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers; found {labels.dtype}", file=path,
                         field="labels", hint="labels.astype(numpy.int64)")
    if n == 0:
        raise InputError("labels is empty: the suite needs at least one image", file=path,
                         field="labels")


def _file_classes(names: np.ndarray, path: Path) -> tuple:
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise InputError(f"classes must be a non-empty 1-D array of strings; found shape "
                         f"{tuple(names.shape)} {names.dtype}", file=path, field="classes",
                         hint="numpy.array(names, dtype=str)")
    out = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    twice = sorted({n for n in out if out.count(n) > 1})
    if twice or not all(out):
        raise InputError(f"class names must be unique and non-empty; found {list(out)}",
                         file=path, field="classes")
    return out


def _labels_in_range(labels: np.ndarray, k: int, path: Path, of: str) -> None:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        raise InputError(f"labels must lie in 0..{k - 1} ({k} classes: {of}); found "
                         f"{low}..{high}", file=path, field="labels")


def label_classes(spec, arrays: dict, path: Path):
    """-> (classes in the model's order, labels (n,) int64 indexing them)."""
    labels = arrays["labels"]
    if "classes" in arrays:
        names = _file_classes(arrays["classes"], path)
        _labels_in_range(labels, len(names), path, "the file's classes array")
        if spec.classes is None:
            return names, labels.astype(np.int64)
        lacking = [c for c in names if c not in spec.classes]
        extra = [c for c in spec.classes if c not in names]
        if lacking or extra:
            what = (f"the file's class {lacking[0]!r} is not in classes {list(spec.classes)}"
                    if lacking else f"classes names {extra[0]!r}, which the file's classes "
                                    f"array {list(names)} lacks")
            raise InputError(what, file=path, field="classes",
                             hint="classes must name the file's classes, in the model's order")
        order = np.asarray([spec.classes.index(c) for c in names], dtype=np.int64)
        return tuple(spec.classes), order[labels]
    if spec.classes is not None:
        _labels_in_range(labels, len(spec.classes), path, "len(classes)")
        return tuple(spec.classes), labels.astype(np.int64)
    _labels_in_range(labels, int(labels.max()) + 1, path, "no classes given")
    return tuple(str(i) for i in range(int(labels.max()) + 1)), labels.astype(np.int64)


def npz_classes(spec, path: Path) -> tuple:
    """The class names of an npz suite, reading only its labels and classes arrays and the
    header of its images array (its shape and the label count checked, no pixel read)."""
    arrays = read_npz(path, ("labels", "classes"))
    shape, dtype = npz_images_header(path)
    if shape is not None:
        fake = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
        n = len(nhwc_images(fake, spec.layout, path))
    else:
        n = len(arrays["labels"])
    _check_labels(arrays["labels"], n, path)
    return label_classes(spec, arrays, path)[0]


def npz_images_header(path: Path) -> tuple:
    """(shape, dtype) of the ``images`` array of an npz from its .npy header (nothing else
    read); (None, None) where the header cannot be read so (loading then says why)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("images.npy") as member:
            version = np.lib.format.read_magic(member)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(member)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None, None
    return tuple(int(v) for v in shape), (dtype if dtype.kind in "uifb" else np.dtype(np.uint8))


def load_npz(spec, path: Path):
    """-> images (n, C, H, W) float32, labels (n,) int64, classes."""
    arrays = read_npz(path)
    images = nhwc_images(arrays["images"], spec.layout, path)
    check_image_values(images, path)
    _check_labels(arrays["labels"], len(images), path)
    classes, labels = label_classes(spec, arrays, path)
    keep = subset_index(len(labels), spec.n_samples, spec.seed)
    channels = spec.channels or images.shape[3]
    size = tuple(spec.size) if spec.size is not None else images.shape[1:3]
    out = torch.empty((len(keep), channels, *size), dtype=torch.float32)
    for start in range(0, len(keep), RESIZE_CHUNK):
        part = images[keep[start:start + RESIZE_CHUNK]]
        part = to_float_images(convert_channels(part, channels))
        out[start:start + len(part)] = resize_images(part, size)
    return out, torch.from_numpy(labels[keep]), classes
