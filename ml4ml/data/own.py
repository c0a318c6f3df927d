"""Your own images as a test suite: a folder in torchvision's ``ImageFolder`` layout, or an
``.npz`` file of arrays.

``load_own_suite(spec, base_dir=...)`` returns the same :class:`~ml4ml.data.suites.Suite` as
``load_suite`` (images (n_samples, channel, height, width) float32 in [0, 1], labels
(n_samples,) int64, ``n_classes = len(classes)``, split ``"test"``); ``suite_digest`` is the
suite's content digest (lineage notices a changed folder); ``own_suite_classes`` gives the
class names without decoding any image. :class:`OwnSuiteSpec` fields:

==========  ==========================================================================
field       meaning
==========  ==========================================================================
name        the suite's name (``Suite.name``).
kind        ``"imagefolder"`` or ``"npz"``.
root        imagefolder: the folder holding one folder per class (relative to base_dir).
path        npz: the ``.npz`` file (relative to base_dir).
size        ``(H, W)``: every image is resized to it (below); None keeps the images'
            own size, which must then be the same for all.
channels    1 or 3. None: 3 for imagefolder (torchvision's loader converts to RGB), the
            array's own channel count for npz.
classes     the class names in the model's output order. None: the sorted class folder
            names (imagefolder); the file's ``classes`` array, else "0".."max label" (npz).
layout      npz only: ``"nhwc"`` or ``"nchw"`` for a 4-D ``images`` array whose channel
            axis is ambiguous (e.g. (n, 3, 3, 3)); None detects it.
n_samples   keep a seeded random subset of this size, as ``load_suite`` does
            (``RandomState(seed).choice(n, n_samples, replace=False)``, sorted).
seed        the subset's seed.
==========  ==========================================================================

**imagefolder** follows torchvision's ``ImageFolder`` (``find_classes``, ``make_dataset``,
``IMG_EXTENSIONS``): the class folders are the folders directly under ``root``; a class's
images are the files anywhere below its folder (subfolders walked, symlinks followed) whose
lower-cased name ends in .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp; samples are in
torchvision's order (class folders by sorted name, then ``sorted(os.walk)`` folders, then
sorted file names), whatever the order of ``classes``; label = the index of the folder's name
in ``classes``. Unlike torchvision, hidden entries (names starting with ".") are skipped: a
``.ipynb_checkpoints`` folder is no class (unless ``classes`` names it) and macOS ``._x.png``
files are no images. Every non-hidden class folder must be in ``classes`` and every name in
``classes`` a folder with at least one image. Images are read with Pillow as torchvision's
loader reads them (``Image.open(f).convert("RGB")``, or ``"L"`` for 1 channel; alpha dropped,
EXIF orientation not applied), as uint8 scaled by 1/255; 16-bit greyscale images (mode
``I;16``) are scaled by 1/65535 instead (Pillow's own conversion would clip them to 255);
32-bit integer and float images (modes ``I``, ``F``) are refused.

**npz** reads (``numpy.load(allow_pickle=False)``) the arrays ``images`` ((n, h, w),
(n, h, w, c) or (n, c, h, w) with c 1 or 3; uint8, scaled by 1/255, or float in [0, 1]),
``labels`` ((n,) integers, indices into the classes) and optionally ``classes`` ((k,)
strings: the names of label values 0..k-1; with ``classes`` in the spec too, the labels are
mapped by name to the spec's order). Other arrays are ignored. 3 -> 1 channel uses Pillow's
``convert("L")`` luma (ITU-R 601-2, Pillow's integer arithmetic on uint8, its weights
19595/65536, 38470/65536, 7471/65536 on floats); 1 -> 3 repeats the channel, as Pillow does.

**Resizing** (both kinds, after the channel conversion): ``(n, C, h, w)`` float32 in [0, 1]
-> ``torchvision.transforms.v2.functional.resize(x, [H, W], InterpolationMode.BILINEAR,
antialias=True)`` (bilinear with an antialiasing filter when shrinking, on the float image,
not on uint8; for float images torchvision runs ``torch.nn.functional.interpolate(x, [H, W],
mode="bilinear", align_corners=False, antialias=True)``, which is what is called), clamped
to [0, 1]; an image already H x W is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ml4ml.data import own_files
from ml4ml.data.own_files import IMG_EXTENSIONS, resize_images, workers
from ml4ml.data.suites import Suite
from ml4ml.errors import InputError

__all__ = ["OwnSuiteSpec", "OWN_FIELDS", "KINDS", "LAYOUTS", "IMG_EXTENSIONS", "own_spec_problems",
           "check_own_spec", "load_own_suite", "own_suite_classes", "suite_digest",
           "resize_images", "own_spec_of", "load_spec_suite", "check_spec_suite"]

KINDS = ("imagefolder", "npz")
LAYOUTS = ("nhwc", "nchw")
DIGEST_FORMAT = "ml4ml-own-suite-digest-v1"
_SEED_LIMIT = 2 ** 32       # numpy RandomState seeds


@dataclass(frozen=True)
class OwnSuiteSpec:
    """Where a user's test images are and how to load them (fields: module docstring).

    Lists given for ``size`` and ``classes`` are stored as tuples (the spec is hashable).
    """

    name: str
    kind: str
    root: str | os.PathLike | None = None
    path: str | os.PathLike | None = None
    size: tuple | None = None
    channels: int | None = None
    classes: tuple | None = None
    layout: str | None = None
    n_samples: int | None = None
    seed: int = 0

    def __post_init__(self):
        for field in ("size", "classes"):
            value = getattr(self, field)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, field, tuple(value.tolist() if isinstance(
                    value, np.ndarray) else value))


# the keys a spec table of an own suite may hold (all fields but the name, which is the table's)
OWN_FIELDS = tuple(f.name for f in fields(OwnSuiteSpec) if f.name != "name")


# --- validation of the spec (no IO) ------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value) != ""


def own_spec_problems(spec: OwnSuiteSpec) -> list[tuple[str, str]]:
    """Every problem of ``spec``'s fields as ``(field, message)``, without touching a file."""
    out = []
    if not isinstance(spec.name, str) or not spec.name:
        out.append(("name", f"expected a non-empty string, got {spec.name!r}"))
    if spec.kind not in KINDS:
        out.append(("kind", f"expected 'imagefolder' or 'npz', got {spec.kind!r}"))
    else:
        need, other = ("root", "path") if spec.kind == "imagefolder" else ("path", "root")
        what = ("the folder holding one folder per class" if need == "root"
                else "the .npz file with arrays images and labels")
        if not _is_path(getattr(spec, need)):
            out.append((need, f"kind {spec.kind!r} needs {need} ({what}), got "
                              f"{getattr(spec, need)!r}"))
        if getattr(spec, other) is not None:
            out.append((other, f"kind {spec.kind!r} takes {need}, not {other}"))
        if spec.kind == "imagefolder" and spec.layout is not None:
            out.append(("layout", "layout applies to kind 'npz' only"))
    size = spec.size
    if size is not None and not (isinstance(size, tuple) and len(size) == 2
                                 and all(_is_int(v) and v > 0 for v in size)):
        out.append(("size", f"expected two positive integers [H, W], got {_plain(size)!r}"))
    if spec.channels is not None and not (_is_int(spec.channels) and spec.channels in (1, 3)):
        out.append(("channels", f"expected 1 or 3, got {spec.channels!r}"))
    out += [("classes", m) for m in _class_name_problems(spec.classes)]
    if spec.layout is not None and spec.layout not in LAYOUTS:
        out.append(("layout", f"expected 'nhwc' or 'nchw', got {spec.layout!r}"))
    if spec.n_samples is not None and not (_is_int(spec.n_samples) and spec.n_samples >= 1):
        out.append(("n_samples", f"expected a positive integer, got {spec.n_samples!r}"))
    if not (_is_int(spec.seed) and 0 <= spec.seed < _SEED_LIMIT):
        out.append(("seed", f"expected an integer in 0..2**32-1, got {spec.seed!r}"))
    return out


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _class_name_problems(classes) -> list[str]:
    if classes is None:
        return []
    if not isinstance(classes, tuple) or not classes:
        return [f"expected a non-empty list of class names, got {_plain(classes)!r}"]
    if not all(isinstance(c, str) and c for c in classes):
        return [f"expected non-empty strings, got {list(classes)!r}"]
    seen, twice = set(), []
    for c in classes:
        if c in seen and c not in twice:
            twice.append(c)
        seen.add(c)
    return [f"names appear twice: {twice}"] if twice else []


def check_own_spec(spec: OwnSuiteSpec, *, spec_file=None) -> None:
    """Raise ``InputError`` (naming ``spec_file`` and the field) for the first problem."""
    if not isinstance(spec, OwnSuiteSpec):
        raise InputError(f"expected an OwnSuiteSpec, got {type(spec).__name__}", file=spec_file,
                         field="spec")
    problems = own_spec_problems(spec)
    if problems:
        field, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"suite {spec.name!r}: {message}{more}", file=spec_file, field=field)


def _resolve(value, base_dir) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


# --- public entry points -----------------------------------------------------------------

def load_own_suite(spec: OwnSuiteSpec, *, base_dir=None, spec_file=None) -> Suite:
    """Load the user's images ``spec`` describes as a ``Suite`` (split ``"test"``).

    base_dir : folder that relative ``root``/``path`` are relative to (the spec file's
        folder); None: the working directory.
    spec_file : the file the spec came from, named in messages about its fields.
    Bad input raises ``InputError`` naming the file and the field.
    """
    check_own_spec(spec, spec_file=spec_file)
    with _about(spec):
        if spec.kind == "imagefolder":
            images, labels, classes = own_files.load_imagefolder(spec, _resolve(spec.root,
                                                                                 base_dir))
        else:
            images, labels, classes = own_files.load_npz(spec, _resolve(spec.path, base_dir))
    return Suite(name=spec.name, split="test", images=images, labels=labels,
                 n_classes=len(classes))


def own_suite_classes(spec: OwnSuiteSpec, *, base_dir=None, spec_file=None) -> tuple:
    """The suite's class names in the model's output order (``len`` = ``n_classes``), read
    from the folder listing or the npz's small arrays, decoding no image."""
    check_own_spec(spec, spec_file=spec_file)
    with _about(spec):
        if spec.kind == "imagefolder":
            return own_files.folder_listing(spec, _resolve(spec.root, base_dir))[0]
        return own_files.npz_classes(spec, _resolve(spec.path, base_dir))


def suite_digest(spec: OwnSuiteSpec, base_dir=None, *, spec_file=None) -> str:
    """The suite's content digest: 64 hex characters of sha256.

    Hashed: a format tag; the loading parameters (kind, size, channels, classes, layout,
    n_samples, seed); then, in sorted order, each file's path relative to ``root`` (npz: the
    file's content only, not its name) with the sha256 of its bytes (streamed). A changed
    byte, a renamed, added or removed image, or a changed parameter changes it; the folder's
    location and the files' times do not. No image is decoded.
    """
    check_own_spec(spec, spec_file=spec_file)
    with _about(spec):
        if spec.kind == "imagefolder":
            root = _resolve(spec.root, base_dir)
            _, files = own_files.folder_listing(spec, root)
            entries = sorted((path.relative_to(root).as_posix(), path) for path, _ in files)
        else:
            path = _resolve(spec.path, base_dir)
            own_files.check_file(path, "path", "the .npz file")
            entries = [("", path)]
        field = "root" if spec.kind == "imagefolder" else "path"
        params = {"kind": spec.kind, "channels": _int_or_none(spec.channels),
                  "size": None if spec.size is None else [int(v) for v in spec.size],
                  "classes": _plain(spec.classes), "layout": spec.layout,
                  "n_samples": _int_or_none(spec.n_samples), "seed": int(spec.seed)}
        outer = hashlib.sha256()
        outer.update(json.dumps([DIGEST_FORMAT, params], sort_keys=True).encode() + b"\n")
        with ThreadPoolExecutor(workers()) as pool:
            digests = pool.map(lambda p: _file_sha256(p, field), [p for _, p in entries])
            for (rel, _), digest in zip(entries, digests):
                outer.update(json.dumps([rel, digest]).encode() + b"\n")
    return outer.hexdigest()


def own_spec_of(suite_spec) -> OwnSuiteSpec:
    """The ``OwnSuiteSpec`` of a pipeline's ``[suites.<name>] kind = ...`` table
    (``spec.tables.SuiteSpec``, its paths already resolved against the spec's folder)."""
    return OwnSuiteSpec(name=suite_spec.name, kind=suite_spec.kind, root=suite_spec.root,
                        path=suite_spec.path, size=suite_spec.size,
                        channels=suite_spec.channels, classes=suite_spec.classes,
                        layout=suite_spec.layout, n_samples=suite_spec.n_samples,
                        seed=suite_spec.seed)


def load_spec_suite(suite_spec, *, root=None, spec_file=None) -> Suite:
    """A pipeline's suite: your own images (``load_own_suite``) or a built-in or registered
    one (``load_suite(name, split, root=, n_samples=, seed=)``)."""
    if getattr(suite_spec, "kind", None) is not None:
        return load_own_suite(own_spec_of(suite_spec), spec_file=spec_file)
    from ml4ml.data.suites import load_suite

    return load_suite(suite_spec.name, suite_spec.split, root=root,
                      n_samples=suite_spec.n_samples, seed=suite_spec.seed)


def check_spec_suite(suite_spec, *, spec_file=None) -> tuple:
    """The class names of a pipeline's own suite, checking its folder listing or its npz's
    arrays without decoding an image (what ``ml4ml validate`` does); InputError naming the
    file and the field otherwise."""
    return own_suite_classes(own_spec_of(suite_spec), spec_file=spec_file)


def _int_or_none(value):
    return None if value is None else int(value)


@contextmanager
def _about(spec):
    """Start the message of every ``InputError`` raised inside with the suite's name."""
    try:
        yield
    except InputError as exc:
        raise InputError(f"suite {spec.name!r}: {exc.message}", file=exc.file, field=exc.field,
                         hint=exc.hint) from exc


def _file_sha256(path: Path, field: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"cannot read the file ({type(exc).__name__}: {exc.strerror or exc})",
                         file=path, field=field) from exc
