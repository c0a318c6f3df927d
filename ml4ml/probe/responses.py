"""Probe one model over a transformation grid: softmax responses and layer statistics.

``probe_model`` is the one entry point. For each batch of images it applies the
transformation for every grid parameter at once on the device, runs the model on the
stacked (aug_param x batch) inputs in forwards of one size and records, through forward
hooks, the eight statistics of docs/measures.md ("Inputs") of each chosen layer. Full activations
never leave the device: each hook reduces its layer's output with five torch kernels to
per-channel sums and maxima plus two per-input values (or, for a layer small enough,
``HELD_LAYER_BYTES``, copies it into a device buffer reduced later), and the eight
statistics are finished once per block of ``STATS_BLOCK_ROWS`` inputs. Only (rows, 8)
statistics per layer and the logits come back to the host.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import xarray as xr

from ml4ml import dims
from ml4ml.zoo.attacks import fgsm
from ml4ml.cluster import keep_freed_memory
from ml4ml.errors import InputError
from ml4ml.probe.lie import check_lie_derivative, softmax_lie_derivative
from ml4ml.probe.feature_maps import FeatureMapMoments
from ml4ml.probe.statistics import LayerRecorder, layer_statistics  # noqa: F401 (re-exported)
from ml4ml.probe.transforms import Transform, get_transform, grid_attrs, validate_grid
from ml4ml.zoo.layers import select_layers


__all__ = ["probe_model", "layer_statistics", "select_layers", "forward_sizes"]

# model inputs whose statistics are finished together (raw buffers: this many rows)
STATS_BLOCK_ROWS = 8192
# images are transformed (to every grid value) as many at a time as fill this many forwards,
# within this many bytes of transformed images: fewer, larger transform calls
TRANSFORM_BATCHES = 4
TRANSFORM_BYTES = 64 * 2**20
# a layer whose float32 outputs for a block of rows take at most this many bytes is
# reduced once per block (its outputs copied there on the device) rather than per forward
HELD_LAYER_BYTES = 8 * 2**20
# inputs of every forward at least: torch picks a convolution's implementation from the
# batch size and the thread count (a 1x1 convolution of fewer than 16 inputs on one
# thread is not oneDNN's), and implementations round differently
MIN_FORWARD_ROWS = 16


def probe_model(model: nn.Module, images, labels, transform: str | Transform, params, *,
                normalize=None, layers: Sequence[str] | None = None, batch_size: int = 256,
                device="cpu", fgsm_epsilon: float = 0.0, sample_ids=None,
                progress=None, n_layers: int | None = None,
                lie_derivative: bool = False, units: str | None = None) -> xr.Dataset:
    """Run ``model`` on every image under every parameter of a transformation grid.

    Parameters
    ----------
    model : a classifier returning logits (n_inputs, n_classes). Moved to ``device`` and put
        in eval mode while probing (its train/eval mode is restored afterwards).
    images : (n_samples, channel, height, width) float tensor or ndarray in [0, 1].
    labels : (n_samples,) integer class labels.
    transform : a registered family name (``"rotation"``, ...) or a ``Transform``.
    params : (aug_param,) grid, see ``transforms.validate_grid``.
    normalize : optional ``(mean, std)`` (scalars or one value per channel) applied after the
        transformation: ``(x - mean) / std``.
    layers : module names (``dict(model.named_modules())`` keys) to record; default the last
        two 2-d convolutions (``select_layers``: ``nn.Conv2d`` modules, nested ones too,
        and the convolutions of TorchScript and ``torch.export`` models; raw conv output,
        before any norm or activation).
    n_layers : the number of layers to record (``select_layers``): the default takes the
        last ``n_layers`` convolutions, and ``layers`` must name that many.
    batch_size : number of model inputs per forward (at least ``MIN_FORWARD_ROWS``). Images
        are transformed to the whole grid a batch at a time, as many as fill
        ``TRANSFORM_BATCHES`` forwards (at least one image; the stack at most
        ``TRANSFORM_BYTES``). Every forward holds the same number of inputs (``forward_sizes``),
        the last of a batch of images padded with copies of its last input (trimmed from
        the outputs): a model's numbers never depend on which inputs share its forwards,
        nor on the thread count through the implementation torch picks for a batch size.
    device : where the transformation, the model and the statistics run.
    fgsm_epsilon : if > 0, perturb the untransformed images with FGSM
        (``attacks.fgsm`` with ``labels`` and ``normalize``) before transforming them.
    sample_ids : optional (n_samples,) integer ids for the ``sample`` coordinate
        (default 0..n_samples-1).
    progress : optional callable ``progress(n_done, n_samples)`` or a tqdm-like object
        (``.update(n)``), called after each batch of images.
    lie_derivative : also compute each sample's Lie derivative of the softmax output along
        the transform's generator at the identity (``probe.lie``: forward-mode autodiff
        through the family's ``derivative``, bilinear for the geometric families), the
        variable ``lee``. A family without a derivative is refused (InputError) before
        anything runs.
    units : ``"channel"``: also return ``unit`` (aug_param, sample, unit), the spatial
        mean of every channel of the recorded layers (the per-channel sums the statistics
        reduce anyway, divided by the spatial size: no extra pass); None or ``"none"``: not.

    On glibc the first call lets this process's malloc keep freed blocks
    (``cluster.keep_freed_memory``): the probe frees and re-allocates megabyte-sized
    tensors every batch, and glibc's defaults return them to the OS each time (thousands of
    page faults per probe, about 5% of its time).

    Returns
    -------
    xarray.Dataset with
        prob        (aug_param, sample, class)              float32  softmax
        prediction  (aug_param, sample)                     int64    argmax class
        confidence  (aug_param, sample)                     float32  largest probability
        act         (aug_param, sample, layer, stat)        float32  the 8 statistics
        layer_name  (layer,)                                object   recorded module names
        lee         (sample,)                               float64  with lie_derivative:
                    mean over classes of |d softmax / d param| at the identity
        unit        (aug_param, sample, unit)               float32  with units="channel":
                    channel means, layers input to output (a coordinate: it is named like
                    its dim), with coordinates unit_label ("layer-2/0", ...) and
                    unit_layer (unit,) (the module names)
    and coordinates ``aug_param`` (float64; attrs ``units``, ``transform``), ``sample``
    (int64), ``label`` (sample,) int64, ``stat`` (``dims.STATS``) and ``class`` (int64);
    ``layer`` (0 .. n_layers-1), each named by ``layer_name``; every variable has CF-style
    ``long_name`` and ``description`` attrs.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected a torch.nn.Module, found {type(model).__name__}",
                         field="model")
    _keep_freed_memory_once()
    transform = get_transform(transform)
    grid = validate_grid(transform, params)
    if lie_derivative:
        check_lie_derivative(transform)
    images_t = _check_images(images)
    n_samples, channels = images_t.shape[:2]
    labels_t = _check_labels(labels, n_samples)
    ids = _check_sample_ids(sample_ids, n_samples)
    batch_size = _check_batch_size(batch_size)
    fgsm_epsilon = _check_epsilon(fgsm_epsilon)
    batch_size = max(batch_size, MIN_FORWARD_ROWS)
    device = _check_device(device)
    record_units = _check_units(units)
    layer_names = select_layers(model, layers, n_layers)
    modules = dict(model.named_modules())

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    model.to(device)
    norm = _check_normalize(normalize, channels, dtype, device)
    grid_t = torch.from_numpy(grid)
    n_params, n_layers = len(grid), len(layer_names)
    images_per_batch = _images_per_batch(batch_size, n_params, images_t[0].numel(), dtype)
    rows_per_batch = n_params * images_per_batch
    width = _forward_width(batch_size, rows_per_batch)
    # statistics are finished once per block of image batches (few small ops per block)
    batches_per_block = max(1, STATS_BLOCK_ROWS // rows_per_batch)
    block_rows = rows_per_batch * batches_per_block

    was_training = model.training
    model.eval()
    recorder = LayerRecorder([(name, modules[name]) for name in layer_names], block_rows,
                             device, held_bytes=HELD_LAYER_BYTES)
    if record_units:
        recorder.moments = FeatureMapMoments(n_layers, n_params, device)
    try:
        n_classes = _count_classes(model, images_t[:1].to(device, dtype), norm, recorder)
        if int(labels_t.max()) >= n_classes:
            raise InputError(f"labels must lie in 0..{n_classes - 1} (the model has {n_classes} "
                             f"outputs); found {int(labels_t.max())}", field="labels")
        # results in the order the rows are computed: (sample batch, aug_param, sample in batch)
        logits_rows = torch.empty((n_params * n_samples, n_classes), dtype=torch.float32)
        act_rows = torch.empty((n_params * n_samples, n_layers, len(dims.STATS)),
                               dtype=torch.float32)
        logits_buf = torch.empty((block_rows, n_classes), dtype=torch.float32, device=device)
        lee = torch.empty(n_samples, dtype=torch.float64) if lie_derivative else None
        lee_width = max(images_per_batch, MIN_FORWARD_ROWS)
        unit_rows = None  # (rows, unit) channel means, sized at the first block
        pin = device.type == "cuda" and images_t.device.type == "cpu"
        images_per_block = images_per_batch * batches_per_block
        for block_start in range(0, n_samples, images_per_block):
            block_stop = min(block_start + images_per_block, n_samples)
            row = 0
            for start in range(block_start, block_stop, images_per_batch):
                stop = min(start + images_per_batch, block_stop)
                batch = images_t[start:stop]
                if pin:
                    batch = batch.pin_memory()
                batch = batch.to(device, dtype, non_blocking=True)
                if fgsm_epsilon > 0:
                    recorder.enabled = False
                    batch = fgsm(model, batch, labels_t[start:stop].to(device), fgsm_epsilon,
                                 normalize=norm)
                    recorder.enabled = True
                if lie_derivative:  # before the grid's forwards: the hooks off
                    recorder.enabled = False
                    lee[start:stop] = softmax_lie_derivative(
                        model, _padded(batch, lee_width), transform, norm)[:stop - start]
                    recorder.enabled = True
                rows = n_params * (stop - start)
                with torch.inference_mode():
                    if recorder.moments is not None:
                        recorder.moments.start_batch(stop - start)
                    stack = transform(batch, grid_t, sample_ids=ids[start:stop])
                    _check_transformed(stack, transform, n_params, batch.shape)
                    stack = stack.reshape((rows,) + tuple(batch.shape[1:]))
                    if norm is not None:
                        stack = (stack - norm[0]) / norm[1]
                    for first in range(0, rows, width):
                        last = min(first + width, rows)
                        recorder.start(row + first, row + last, width)
                        if recorder.moments is not None:
                            recorder.moments.at = first
                        logits = model(_padded(stack[first:last], width))
                        logits_buf[row + first:row + last] = logits[:last - first]
                        recorder.finish()
                    if recorder.moments is not None:
                        recorder.moments.finish_batch()
                row += rows
                _report(progress, stop, n_samples, stop - start)
            with torch.inference_mode():
                act_block = recorder.statistics(row)
                first_row = n_params * block_start
                logits_rows[first_row:first_row + row] = logits_buf[:row]
                act_rows[first_row:first_row + row] = act_block.transpose(0, 1)
                if record_units:
                    means = torch.cat(recorder.channel_means(row), dim=1)
                    if unit_rows is None:
                        unit_rows = torch.empty((n_params * n_samples, means.shape[1]),
                                                dtype=torch.float32)
                    unit_rows[first_row:first_row + row] = means
    finally:
        recorder.remove()
        model.train(was_training)

    prob = _by_aug_param(_softmax_rows(logits_rows), n_params, images_per_batch)
    del logits_rows
    act = _by_aug_param(act_rows, n_params, images_per_batch)
    confidence, prediction = prob.max(dim=2)
    ds = _as_dataset(prob, prediction, confidence, act, layer_names, grid, transform,
                     ids, labels_t, fgsm_epsilon, normalize, lee)
    if record_units:
        channels = [recorder.row_shape[index][0] for index in range(n_layers)]
        ds = _with_units(ds, _by_aug_param(unit_rows, n_params, images_per_batch), channels,
                         layer_names, recorder.moments.result())
    return ds


@functools.cache
def _keep_freed_memory_once() -> bool:
    return keep_freed_memory()


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of (rows, class) logits, in place (torch.softmax over a short
    innermost class dimension is several times slower on CPU)."""
    probs = logits.sub_(logits.amax(dim=1, keepdim=True)).exp_()
    return probs.div_(probs.sum(dim=1, keepdim=True))


def forward_sizes(n_samples: int, n_params: int, batch_size: int = 256, image_numel: int = 1,
                  dtype=torch.float32) -> list[int]:
    """The number of inputs of each forward pass ``probe_model`` makes, in order (every
    one the same: the last of a batch of images is padded).

    image_numel : values per image (channel x height x width) and dtype the model's: they
        matter only for images so large that ``TRANSFORM_BYTES`` limits a batch.
    """
    batch_size = max(batch_size, MIN_FORWARD_ROWS)
    per_batch = _images_per_batch(batch_size, n_params, image_numel, dtype)
    width = _forward_width(batch_size, n_params * per_batch)
    sizes = []
    for start in range(0, n_samples, per_batch):
        rows = n_params * (min(start + per_batch, n_samples) - start)
        sizes += [width] * -(-rows // width)
    return sizes


def _forward_width(batch_size: int, rows_per_batch: int) -> int:
    """Inputs of every forward: ``batch_size``, or a whole batch of images where that is
    fewer (at least ``MIN_FORWARD_ROWS``)."""
    return max(MIN_FORWARD_ROWS, min(batch_size, rows_per_batch))


def _padded(inputs: torch.Tensor, width: int) -> torch.Tensor:
    """``inputs`` (n, ...) followed by copies of its last row up to ``width`` rows."""
    if inputs.shape[0] == width:
        return inputs
    tail = inputs[-1:].expand((width - inputs.shape[0],) + tuple(inputs.shape[1:]))
    return torch.cat([inputs, tail])


def _images_per_batch(batch_size: int, n_params: int, image_numel: int, dtype) -> int:
    """Images transformed to the whole grid at a time (see ``probe_model``'s batch_size)."""
    by_rows = TRANSFORM_BATCHES * batch_size // n_params
    by_bytes = TRANSFORM_BYTES // (n_params * image_numel * torch.finfo(dtype).bits // 8)
    return max(1, min(by_rows, by_bytes))


def _by_aug_param(rows: torch.Tensor, n_params: int, batch_width: int) -> torch.Tensor:
    """(aug_param, sample, ...) from rows ordered (sample batch, aug_param, sample in batch).

    Every batch holds ``batch_width`` samples but the last, which may hold fewer.
    """
    n_samples = rows.shape[0] // n_params
    tail = tuple(rows.shape[1:])
    n_full = n_samples // batch_width
    full = n_full * batch_width
    out = torch.empty((n_params, n_samples) + tail, dtype=rows.dtype)
    out[:, :full].view((n_params, n_full, batch_width) + tail).copy_(
        rows[:n_params * full].view((n_full, n_params, batch_width) + tail).transpose(0, 1))
    out[:, full:] = rows[n_params * full:].view((n_params, n_samples - full) + tail)
    return out




def _count_classes(model, first_image, norm, recorder) -> int:
    """Number of model outputs, from one forward of one untransformed image (hooks off)."""
    recorder.enabled = False
    with torch.inference_mode():
        x = first_image if norm is None else (first_image - norm[0]) / norm[1]
        try:
            logits = model(x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the model cannot take images of shape {tuple(x.shape[1:])} "
                             f"(channel, height, width): {first_line}", field="images",
                             hint="probe it on a suite of the shape it was trained on") from None
    recorder.enabled = True
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"the model must return logits of shape (n_inputs, n_classes); found "
                         f"{found} for one input", field="model")
    return int(logits.shape[1])


def _check_transformed(stack, transform: Transform, n_params: int, batch_shape) -> None:
    expected = (n_params,) + tuple(batch_shape)
    if not isinstance(stack, torch.Tensor) or tuple(stack.shape) != expected:
        found = tuple(stack.shape) if isinstance(stack, torch.Tensor) else type(stack).__name__
        raise InputError(f"transform {transform.name!r} must return (aug_param, batch, channel, "
                         f"height, width) = {expected}; found {found}", field="transform")


def _check_images(images) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"images must be float in [0, 1]; found dtype {images.dtype}",
                             field="images", hint="divide uint8 images by 255")
        images = torch.from_numpy(images)
    elif not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a tensor or ndarray (n_samples, channel, height, "
                         f"width); found {type(images).__name__}", field="images")
    if images.dim() != 4 or images.shape[0] == 0:
        raise InputError(f"images must have shape (n_samples, channel, height, width) with "
                         f"n_samples > 0; found {tuple(images.shape)}", field="images")
    if not images.is_floating_point():
        raise InputError(f"images must be float in [0, 1]; found dtype {images.dtype}",
                         field="images", hint="divide uint8 images by 255")
    images = images.detach()
    low, high = float(images.min()), float(images.max())  # NaN propagates through both
    if not (math.isfinite(low) and math.isfinite(high)):
        n_bad = int((~torch.isfinite(images)).sum())
        raise InputError(f"images must be finite; found {n_bad} NaN or infinite values",
                         field="images")
    if low < 0 or high > 1:
        raise InputError(f"images must lie in [0, 1]; found values in [{low:g}, {high:g}]",
                         field="images", hint="pass unnormalised images and use normalize=")
    return images


def _check_labels(labels, n_samples: int) -> torch.Tensor:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise InputError(f"labels must have shape ({n_samples},), one per image; found "
                         f"{array.shape}", field="labels")
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"labels must be integers; found dtype {array.dtype}", field="labels")
    if array.min() < 0:
        raise InputError(f"labels must be >= 0; found {int(array.min())}", field="labels")
    return torch.from_numpy(array.astype(np.int64))


def _check_sample_ids(sample_ids, n_samples: int) -> np.ndarray:
    if sample_ids is None:
        return np.arange(n_samples, dtype=np.int64)
    ids = np.asarray(sample_ids.detach().cpu() if isinstance(sample_ids, torch.Tensor)
                     else sample_ids)
    if ids.ndim != 1 or ids.shape[0] != n_samples or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"sample_ids must be ({n_samples},) integers; found {ids.shape} "
                         f"{ids.dtype}", field="sample_ids")
    if len(np.unique(ids)) != n_samples:
        raise InputError("sample_ids must be unique; found repeated ids", field="sample_ids")
    return ids.astype(np.int64)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer; found {batch_size!r}",
                         field="batch_size")
    return int(batch_size)


def _check_epsilon(epsilon) -> float:
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(f"fgsm_epsilon must be a finite number >= 0; found {epsilon!r}",
                         field="fgsm_epsilon")
    return value


def _check_units(units) -> bool:
    """Whether ``units`` asks for per-channel units (None, "none" or "channel")."""
    if units is None or units == "none":
        return False
    if units == "channel":
        return True
    raise InputError(f"units must be 'channel' or 'none'; found {units!r}", field="units")


def _with_units(ds: xr.Dataset, unit: torch.Tensor, channels, layer_names,
                moments) -> xr.Dataset:
    """``ds`` with the channel means ``unit`` (aug_param, sample, unit), their labels and
    tmeasures' per-feature-map ``unit_tv`` and ``unit_sv`` (unit,) (``moments``: per layer
    (tv, sv))."""
    labels = dims.unit_labels(channels)
    modules = [name for name, count in zip(layer_names, channels) for _ in range(count)]
    attrs = dict(dims.UNIT_RESPONSE_ATTRS)
    ds = ds.assign({
        name: (dims.UNIT, torch.cat([m[k] for m in moments]).numpy())
        for k, name in enumerate((dims.UNIT_TV, dims.UNIT_SV))})
    return dims.describe(ds.assign_coords({
        dims.UNIT_RESPONSE: ((dims.AUG_PARAM, dims.SAMPLE, dims.UNIT), unit.numpy(), attrs),
        dims.UNIT_LABEL: (dims.UNIT, np.array(labels, dtype=object)),
        dims.UNIT_LAYER: (dims.UNIT, np.array(modules, dtype=object)),
    }))


def _check_device(device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; expected e.g. 'cpu' or 'cuda'",
                         field="device") from None


def _check_normalize(normalize, channels: int, dtype, device):
    """(mean, std) as (1, channel, 1, 1) tensors on the device, or None."""
    if normalize is None:
        return None
    try:
        mean, std = normalize
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"normalize must be (mean, std); found {normalize!r}",
                         field="normalize") from None
    for name, value in (("mean", mean), ("std", std)):
        if value.numel() not in (1, channels) or not bool(torch.isfinite(value).all()):
            raise InputError(f"normalize {name} must be 1 or {channels} finite values; found "
                             f"{value.tolist()}", field="normalize")
    if bool((std <= 0).any()):
        raise InputError(f"normalize std must be > 0; found {std.tolist()}", field="normalize")
    shape = (1, -1, 1, 1)
    return (mean.to(dtype).reshape(shape).to(device), std.to(dtype).reshape(shape).to(device))


def _report(progress, n_done: int, n_total: int, n_new: int) -> None:
    if progress is None:
        return
    if hasattr(progress, "update"):
        progress.update(n_new)
    else:
        progress(n_done, n_total)


def _as_dataset(prob, prediction, confidence, act, layer_names, grid, transform, ids, labels,
                fgsm_epsilon, normalize, lee=None) -> xr.Dataset:
    n_classes = prob.shape[2]
    coords = {
        dims.AUG_PARAM: (dims.AUG_PARAM, grid,
                         grid_attrs(transform)),
        dims.SAMPLE: (dims.SAMPLE, ids),
        dims.LABEL: (dims.SAMPLE, labels.numpy()),
        dims.CLASS: (dims.CLASS, np.arange(n_classes, dtype=np.int64)),
        dims.STAT: (dims.STAT, np.array(dims.STATS, dtype=object)),
        dims.LAYER: (dims.LAYER, np.arange(len(layer_names), dtype=np.int64)),
    }
    data_vars = {
        dims.PROB: ((dims.AUG_PARAM, dims.SAMPLE, dims.CLASS), prob.numpy()),
        dims.PREDICTION: ((dims.AUG_PARAM, dims.SAMPLE), prediction.numpy().astype(np.int64)),
        dims.CONFIDENCE: ((dims.AUG_PARAM, dims.SAMPLE), confidence.numpy()),
        dims.ACT: ((dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT), act.numpy()),
        dims.LAYER_NAME: ((dims.LAYER,), np.array(layer_names, dtype=object)),
    }
    if lee is not None:
        data_vars[dims.LEE] = ((dims.SAMPLE,), lee.numpy())
    attrs = {"transform": transform.name,
             "fgsm_epsilon": float(fgsm_epsilon)}
    if transform.interpolation != "nearest":
        attrs["interpolation"] = transform.interpolation
    return dims.describe(xr.Dataset(data_vars, coords=coords, attrs=attrs))
