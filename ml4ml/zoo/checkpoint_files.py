"""ml4ml's own checkpoint files: save, find, verify and load a trained model with its recipe.

A checkpoint is one ``torch.save`` payload, a plain dict that ``torch.load(weights_only=True)``
reads: format (``CHECKPOINT_FORMAT``), version, arch, num_classes, in_channels, image_size,
recipe (a dict) and state_dict. Paths are local files or fsspec URLs (object storage).
The formats of models added from elsewhere live in ``zoo/checkpoints.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import torch
from torch import nn

from ml4ml.errors import InputError
from ml4ml.store.backend import fault_point
from ml4ml.zoo.architectures import build_model
from ml4ml.zoo.recipe import Recipe

CHECKPOINT_FORMAT = "ml4ml-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(trained_or_model, recipe: Recipe, path) -> str:
    """Write the model and its recipe to ``path`` atomically; return the file's sha256.

    trained_or_model : a ``TrainedModel`` or a model made by ``build_model``.
    The payload is a plain dict (``torch.load(weights_only=True)`` reads it): format,
    version, arch, num_classes, in_channels, image_size, recipe (a dict), state_dict.
    Written to a temporary file in the same folder, then ``os.replace``d.
    """
    model = getattr(trained_or_model, "model", trained_or_model)
    build = getattr(model, "ml4ml_build", None)
    if not isinstance(model, nn.Module) or build is None:
        raise InputError(
            f"expected a TrainedModel or a model made by build_model, got "
            f"{type(model).__name__}", file=path, field="model",
            hint="build the model with ml4ml.zoo.build_model",
        )
    if not isinstance(recipe, Recipe):
        raise InputError(f"expected a Recipe, got {type(recipe).__name__}", file=path,
                         field="recipe")
    if recipe.arch != build["arch"]:
        raise InputError(f"recipe arch {recipe.arch!r} does not match the model's "
                         f"{build['arch']!r}", file=path, field="arch")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": build["arch"],
        "num_classes": build["num_classes"],
        "in_channels": build["in_channels"],
        "image_size": build["image_size"],
        "recipe": _plain(recipe.to_dict()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path = os.fspath(path)
    if "://" in path:  # object storage: one PUT is atomic
        import fsspec

        with fsspec.open(path, "wb", **_storage_options(path)) as file:
            file.write(data)
        fault_point()
        return hashlib.sha256(data).hexdigest()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        fault_point()  # the crash tests kill here too: an orphan temporary file
        os.replace(temp, path)
        fault_point()
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return hashlib.sha256(data).hexdigest()


def _storage_options(url: str) -> dict:
    from ml4ml.store.backend import storage_options

    return storage_options(url)


def _open_read(path: str):
    """A checkpoint file opened for reading: a local path or any fsspec URL."""
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb", **_storage_options(path)).open()
    return open(path, "rb")


def checkpoint_exists(path) -> bool:
    """Whether a checkpoint file (local or at an fsspec URL) exists."""
    path = os.fspath(path)
    if not path:
        return False
    if "://" in path:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path, **_storage_options(path))
        return fs.isfile(inner)
    return os.path.isfile(path)


def checkpoint_path(folder, mid: str) -> str:
    """The checkpoint file of model ``mid`` in ``folder`` (a local folder or a URL prefix)."""
    folder = os.fspath(folder)
    return f"{folder.rstrip('/')}/{mid}.pt" if "://" in folder else os.path.join(folder,
                                                                                f"{mid}.pt")


def verify_checkpoint(path, sha256: str | None = None) -> None:
    """InputError naming the file unless it exists, is not empty and has ``sha256``."""
    path = os.fspath(path)
    try:
        with _open_read(path) as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        raise InputError("checkpoint file not found", file=path, field="checkpoint",
                         hint="retrain the model ('ml4ml train' redoes a missing checkpoint)") \
            from None
    except OSError as exc:
        raise InputError(f"cannot read checkpoint: {exc.strerror}", file=path,
                         field="checkpoint") from None
    if sha256 and digest != str(sha256).lower():
        raise InputError(f"checkpoint sha256 {digest[:12]}... differs from the one recorded at "
                         f"training ({str(sha256)[:12]}...): the file was truncated or replaced",
                         file=path, field="checkpoint_sha256",
                         hint="retrain the model with 'ml4ml train --force'")


def load_checkpoint(path, *, sha256: str | None = None) -> tuple[nn.Module, Recipe]:
    """Read a checkpoint written by ``save_checkpoint``: ``(model, recipe)``.

    sha256 : the expected hex digest of the file; a mismatch is an error.
    The model is rebuilt with ``build_model`` (no pretrained file needed) and returned
    in eval mode on CPU. A missing, unreadable or mismatched file raises ``InputError``
    naming the file and what was expected and found.
    """
    path = os.fspath(path)
    try:
        with _open_read(path) as file:
            data = file.read()
    except FileNotFoundError as exc:
        raise InputError("checkpoint file not found", file=path, field="checkpoint") from exc
    except OSError as exc:
        raise InputError(f"cannot read checkpoint: {exc}", file=path,
                         field="checkpoint") from exc
    if sha256 is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != str(sha256).lower():
            raise InputError(f"sha256 mismatch: expected {sha256}, found {found}", file=path,
                             field="sha256",
                             hint="the file changed since it was recorded; retrain the model")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise InputError(f"not a readable checkpoint (expected a torch.save payload): "
                         f"{type(exc).__name__}: {exc}", file=path,
                         field="checkpoint") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"not an ml4ml checkpoint: expected format {CHECKPOINT_FORMAT!r}, "
                         f"found {found!r}", file=path, field="format")
    missing = [k for k in ("arch", "num_classes", "in_channels", "image_size", "recipe",
                           "state_dict") if k not in payload]
    if missing:
        raise InputError(f"checkpoint lacks {', '.join(missing)}", file=path,
                         field=missing[0])
    recipe = _recipe_from_dict(payload["recipe"], path)
    model = build_model(payload["arch"], num_classes=payload["num_classes"],
                        in_channels=payload["in_channels"], image_size=payload["image_size"])
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"state_dict does not fit a {payload['arch']} model: {exc}",
                         file=path, field="state_dict") from exc
    return model.eval(), recipe


def _plain(value):
    """Tuples to lists, recursively (plain data for the checkpoint payload)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _recipe_from_dict(values, path) -> Recipe:
    if not isinstance(values, dict) or "mid" not in values:
        raise InputError("checkpoint recipe must be a dict with at least 'mid'", file=path,
                         field="recipe")
    known = {k: values[k] for k in Recipe.field_names() if k in values}
    for key in ("normalize_mean", "normalize_std"):
        if key in known:
            known[key] = tuple(known[key])
    if "anomaly_removed" in known:
        known["anomaly_removed"] = tuple(tuple(pair) for pair in known["anomaly_removed"])
    return Recipe(**known)
