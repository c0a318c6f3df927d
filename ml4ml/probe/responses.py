"""Probe one model over a transformation grid: softmax responses and layer statistics.

``probe_model`` is the one entry point. For each batch of images it applies the
transformation for every grid parameter at once on the device, runs the model on the
stacked (aug_param x batch) inputs in chunks of ``batch_size`` and records, through forward
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
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import xarray as xr

from ml4ml import dims
from ml4ml.zoo.attacks import fgsm
from ml4ml.cluster import keep_freed_memory
from ml4ml.errors import InputError
from ml4ml.probe.transforms import Transform, get_transform, validate_grid
from ml4ml.zoo.layers import select_layers


__all__ = ["probe_model", "layer_statistics", "select_layers", "forward_sizes"]

# model inputs whose statistics are finished together (raw buffers: this many rows)
STATS_BLOCK_ROWS = 8192
# images are transformed (to every grid value) as many at a time as fill this many forwards,
# within this many bytes of transformed images: fewer, larger transform calls
TRANSFORM_BATCHES = 4
TRANSFORM_BYTES = 64 * 2**20
# layers with fewer spatial positions than this are reduced over a (n, spatial, channel) copy
SMALL_SPATIAL = 32
# a layer whose float32 outputs for a block of rows take at most this many bytes is
# reduced once per block (its outputs copied there on the device) rather than per forward
HELD_LAYER_BYTES = 8 * 2**20


def probe_model(model: nn.Module, images, labels, transform: str | Transform, params, *,
                normalize=None, layers: Sequence[str] | None = None, batch_size: int = 256,
                device="cpu", fgsm_epsilon: float = 0.0, sample_ids=None,
                progress=None, n_layers: int | None = None) -> xr.Dataset:
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
    batch_size : number of model inputs per forward (the last of a batch of images may be
        fewer). Images are transformed to the whole grid a batch at a time, as many as fill
        ``TRANSFORM_BATCHES`` forwards (at least one image; the stack at most
        ``TRANSFORM_BYTES``).
    device : where the transformation, the model and the statistics run.
    fgsm_epsilon : if > 0, perturb the untransformed images with FGSM
        (``attacks.fgsm`` with ``labels`` and ``normalize``) before transforming them.
    sample_ids : optional (n_samples,) integer ids for the ``sample`` coordinate
        (default 0..n_samples-1).
    progress : optional callable ``progress(n_done, n_samples)`` or a tqdm-like object
        (``.update(n)``), called after each batch of images.

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
    images_t = _check_images(images)
    n_samples, channels = images_t.shape[:2]
    labels_t = _check_labels(labels, n_samples)
    ids = _check_sample_ids(sample_ids, n_samples)
    batch_size = _check_batch_size(batch_size)
    fgsm_epsilon = _check_epsilon(fgsm_epsilon)
    device = _check_device(device)
    layer_names = select_layers(model, layers, n_layers)
    modules = dict(model.named_modules())

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    model.to(device)
    norm = _check_normalize(normalize, channels, dtype, device)
    grid_t = torch.from_numpy(grid)
    n_params, n_layers = len(grid), len(layer_names)
    images_per_batch = _images_per_batch(batch_size, n_params, images_t[0].numel(), dtype)
    rows_per_batch = n_params * images_per_batch
    # statistics are finished once per block of image batches (few small ops per block)
    batches_per_block = max(1, STATS_BLOCK_ROWS // rows_per_batch)
    block_rows = rows_per_batch * batches_per_block

    was_training = model.training
    model.eval()
    recorder = _LayerRecorder([(name, modules[name]) for name in layer_names], block_rows,
                              device)
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
                rows = n_params * (stop - start)
                with torch.inference_mode():
                    stack = transform.apply(batch, grid_t)
                    _check_transformed(stack, transform, n_params, batch.shape)
                    stack = stack.reshape((rows,) + tuple(batch.shape[1:]))
                    if norm is not None:
                        stack = (stack - norm[0]) / norm[1]
                    for first in range(0, rows, batch_size):
                        last = min(first + batch_size, rows)
                        recorder.start(row + first, row + last)
                        logits_buf[row + first:row + last] = model(stack[first:last])
                        recorder.finish()
                row += rows
                _report(progress, stop, n_samples, stop - start)
            with torch.inference_mode():
                act_block = recorder.statistics(row)
                first_row = n_params * block_start
                logits_rows[first_row:first_row + row] = logits_buf[:row]
                act_rows[first_row:first_row + row] = act_block.transpose(0, 1)
    finally:
        recorder.remove()
        model.train(was_training)

    prob = _by_aug_param(_softmax_rows(logits_rows), n_params, images_per_batch)
    del logits_rows
    act = _by_aug_param(act_rows, n_params, images_per_batch)
    confidence, prediction = prob.max(dim=2)
    return _as_dataset(prob, prediction, confidence, act, layer_names, grid, transform,
                       ids, labels_t, fgsm_epsilon, normalize)


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
    """The number of inputs of each forward pass ``probe_model`` makes, in order.

    image_numel : values per image (channel x height x width) and dtype the model's: they
        matter only for images so large that ``TRANSFORM_BYTES`` limits a batch.
    """
    per_batch = _images_per_batch(batch_size, n_params, image_numel, dtype)
    sizes = []
    for start in range(0, n_samples, per_batch):
        rows = n_params * (min(start + per_batch, n_samples) - start)
        sizes += [min(batch_size, rows - first) for first in range(0, rows, batch_size)]
    return sizes


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


def layer_statistics(activations: torch.Tensor) -> torch.Tensor:
    """The eight statistics of docs/measures.md of each sample's layer output.

    activations : (n, channel, *spatial) (or (n, features), read as features x 1x1)
    Returns (n, 8) float32 in ``dims.STATS`` order: mean, std, max, min over all values;
    mean_max, mean_std of the per-channel spatial means; max_mean, max_std of the
    per-channel spatial maxima (every std the population one; the std over all values is
    computed from values centred on their channel's mean, plus the spread of those means).
    """
    z = activations if activations.dtype == torch.float32 else activations.float()
    n, channels = z.shape[:2]
    per_channel = torch.empty((2, n, channels), dtype=torch.float32, device=z.device)
    per_sample = torch.empty((2, n), dtype=torch.float32, device=z.device)
    spatial = _raw_statistics(z, per_channel, per_sample)
    return _finish_statistics(per_channel, per_sample, spatial)



def _raw_statistics(activations: torch.Tensor, per_channel: torch.Tensor,
                    per_sample: torch.Tensor, scratch: torch.Tensor | None = None) -> int:
    """The full-tensor ATen reductions, written in place; returns the spatial size.

    per_channel (2, n, channel) <- spatial sum and spatial max of each channel;
    per_sample (2, n) <- min over all values and ||values - their channel's mean||_2
    (each output row contiguous, so the reductions write in place).
    scratch : optional float32 tensor of at least as many values as ``activations``, for the
        centred values (saves an allocation per call).
    Five kernels (sum, max, min, subtract, norm): right after the layer's own forward each
    kernel launch costs more than its arithmetic, so there are as few as the statistics
    need, and only plain ones (var_mean and aminmax are far slower on CPU). A channels_last
    output is reduced as the (n, spatial, channel) array it is in memory; a small spatial
    extent (< ``SMALL_SPATIAL``) from an (n, spatial, channel) copy, since CPU reductions
    over a short innermost dimension are several times slower per value.
    """
    z = activations
    if z.dtype != torch.float32:
        z = z.float()
    n, channels = z.shape[:2]
    # values: (n, spatial, channel) reduced over dim 1, or (n, channel, spatial) over dim 2
    copied = False
    if z.dim() == 4 and not z.is_contiguous() \
            and z.is_contiguous(memory_format=torch.channels_last):
        values, reduce = z.permute(0, 2, 3, 1).reshape(n, -1, channels), 1  # a view
    else:
        values = z.reshape(n, channels, -1)
        reduce = 1 if values.shape[2] < SMALL_SPATIAL else 2
        if reduce == 1:
            transposed = values.transpose(1, 2)
            values = transposed.contiguous()
            copied = values is not transposed  # not a view of the layer's output
        else:
            values = values.contiguous()
    spatial = values.shape[reduce]
    sums = per_channel[0].unsqueeze(reduce)
    torch.sum(values, dim=reduce, out=per_channel[0])
    torch.amax(values, dim=reduce, out=per_channel[1])
    torch.amin(values.view(n, -1), dim=1, out=per_sample[0])
    if copied:  # our own copy: centred in place
        centred = values.sub_(sums, alpha=1.0 / spatial)
    elif scratch is not None and scratch.numel() >= values.numel():
        centred = torch.sub(values, sums, alpha=1.0 / spatial,
                            out=scratch.view(-1)[:values.numel()].view(values.shape))
    else:
        centred = torch.sub(values, sums, alpha=1.0 / spatial)
    torch.linalg.vector_norm(centred.view(n, -1), dim=1, out=per_sample[1])
    return spatial


def _finish_statistics(per_channel: torch.Tensor, per_sample: torch.Tensor, spatial: int,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 8) statistics in dims.STATS order from ``_raw_statistics``' outputs."""
    channels = per_channel.shape[2]
    across_mean = per_channel.mean(dim=-1)                    # (2, n): sum mean, max mean
    across_max = per_channel.amax(dim=-1)                     # (2, n): sum max, max
    across_dev = torch.linalg.vector_norm(per_channel - across_mean.unsqueeze(-1), dim=-1)
    # ||values - mean||^2 = sum over channels of ||values_c - mean_c||^2 (per_sample[1])
    #                       + spatial x ||channel means - mean||^2 (= across_dev[0]^2 / spatial)
    centred_norm = torch.hypot(per_sample[1], across_dev[0] / math.sqrt(spatial))
    # dims.STATS: mean, std, max, min, mean_max, mean_std, max_mean, max_std (then scaled)
    raw = torch.stack([across_mean[0], centred_norm, across_max[1], per_sample[0],
                       across_max[0], across_dev[0], across_mean[1], across_dev[1]], dim=1,
                      out=out)
    return raw.mul_(_stat_scale(channels, spatial, raw.device))


@functools.lru_cache(maxsize=64)
def _stat_scale(channels: int, spatial: int, device: torch.device) -> torch.Tensor:
    """(8,) factors turning _finish_statistics' stacked sums and norms into dims.STATS."""
    by_stat = {"mean": 1 / spatial, "std": 1 / math.sqrt(channels * spatial), "max": 1.0,
               "min": 1.0, "mean_max": 1 / spatial,
               "mean_std": 1 / (spatial * math.sqrt(channels)), "max_mean": 1.0,
               "max_std": 1 / math.sqrt(channels)}
    return torch.tensor([by_stat[stat] for stat in dims.STATS], dtype=torch.float32,
                        device=device)


class _LayerRecorder:
    """Forward hooks that reduce each chosen layer's output into per-block buffers.

    ``start(first, last)`` before each forward names the block rows it fills;
    ``statistics(n_rows)`` returns the (layer, n_rows, 8) statistics of the block's first
    ``n_rows`` rows. Each layer output is reduced in the hook to per-channel sums and maxima
    and two per-row values (``_raw_statistics``), finished once per block.
    """

    def __init__(self, named_modules: list[tuple[str, nn.Module]], block_rows: int, device):
        n_layers = len(named_modules)
        self.names = [name for name, _ in named_modules]
        self.enabled = True
        self.block_rows = block_rows
        self.device = device
        self.first = self.last = 0
        self.seen = [False] * n_layers
        self.row_shape: list[tuple | None] = [None] * n_layers
        self.spatial = [0] * n_layers
        self.out = torch.empty((n_layers, block_rows, len(dims.STATS)), dtype=torch.float32,
                               device=device)
        # raw per-channel and per-row buffers, allocated at the first output
        self.per_channel: list[torch.Tensor | None] = [None] * n_layers
        self.per_sample: list[torch.Tensor | None] = [None] * n_layers
        # a layer whose outputs for a whole block fit in HELD_LAYER_BYTES is copied
        # into ``held`` and reduced once per block: a small layer's reductions cost mostly
        # their launches, and one copy per forward is one launch instead of five
        self.held: list[torch.Tensor | None] = [None] * n_layers
        # centred values of a layer reduced per forward
        self.scratch: list[torch.Tensor | None] = [None] * n_layers
        self.handles = [module.register_forward_hook(self._hook(i))
                        for i, (_, module) in enumerate(named_modules)]

    def _hook(self, index: int) -> Callable:
        def hook(module, inputs, output):
            if not self.enabled:
                return
            n_rows = self.last - self.first
            if self.seen[index]:
                raise InputError(
                    f"layer {self.names[index]!r} ran more than once in one forward pass, so "
                    f"its statistics are ambiguous", field="layers",
                    hint="record a module that runs once per forward",
                )
            if not isinstance(output, torch.Tensor) or output.dim() < 2 \
                    or output.shape[0] != n_rows:
                found = (f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor)
                         else type(output).__name__)
                raise InputError(
                    f"layer {self.names[index]!r} must output a tensor (n_inputs, channel, ...) "
                    f"with one row per input ({n_rows}); found {found}", field="layers",
                )
            self.seen[index] = True
            if self.row_shape[index] is None:
                self._allocate(index, output)
            elif tuple(output.shape[1:]) != self.row_shape[index]:
                raise InputError(f"layer {self.names[index]!r} changed its output shape per "
                                 f"input from {self.row_shape[index]} to "
                                 f"{tuple(output.shape[1:])}", field="layers")
            rows = slice(self.first, self.last)
            if self.held[index] is not None:  # small layer: reduced once per block
                self.held[index][rows].copy_(output)
            else:
                _raw_statistics(output, self.per_channel[index][:, rows],
                                self.per_sample[index][:, rows], self.scratch[index])
        return hook

    def _allocate(self, index: int, output: torch.Tensor) -> None:
        """The layer's per-block buffers, sized from its first output (the largest)."""
        row_shape = tuple(output.shape[1:])
        self.row_shape[index] = row_shape
        self.spatial[index] = math.prod(row_shape[1:])
        kwargs = {"dtype": torch.float32, "device": self.device}
        if self.block_rows * math.prod(row_shape) * 4 <= HELD_LAYER_BYTES:
            self.held[index] = torch.empty((self.block_rows,) + row_shape, **kwargs)
        else:
            self.scratch[index] = torch.empty(output.numel(), **kwargs)
        self.per_channel[index] = torch.empty((2, self.block_rows, row_shape[0]), **kwargs)
        self.per_sample[index] = torch.empty((2, self.block_rows), **kwargs)

    def start(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.seen = [False] * len(self.seen)

    def finish(self) -> None:
        missing = [name for name, seen in zip(self.names, self.seen) if not seen]
        if missing:
            raise InputError(f"layers {missing} did not run in the model's forward pass",
                             field="layers")

    def statistics(self, n_rows: int) -> torch.Tensor:
        """(layer, n_rows, 8) statistics of the block's first ``n_rows`` rows (a view)."""
        for index, per_channel in enumerate(self.per_channel):
            if per_channel is None:  # the layer produced no output in this block
                continue
            per_channel, per_sample = per_channel[:, :n_rows], self.per_sample[index][:, :n_rows]
            if self.held[index] is not None:
                _raw_statistics(self.held[index][:n_rows], per_channel, per_sample)
            _finish_statistics(per_channel, per_sample, self.spatial[index],
                               out=self.out[index, :n_rows])
        return self.out[:, :n_rows]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


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
                fgsm_epsilon, normalize) -> xr.Dataset:
    n_classes = prob.shape[2]
    coords = {
        dims.AUG_PARAM: (dims.AUG_PARAM, grid,
                         {"units": transform.units, "transform": transform.name}),
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
    attrs = {"transform": transform.name,
             "fgsm_epsilon": float(fgsm_epsilon)}
    return dims.describe(xr.Dataset(data_vars, coords=coords, attrs=attrs))
