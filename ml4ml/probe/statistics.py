"""The eight layer statistics of docs/measures.md ("Inputs"), reduced on the device.

``layer_statistics`` computes them for one tensor of layer outputs; ``LayerRecorder``
(forward hooks) reduces each chosen layer's output as the probe runs the model: five torch
kernels to per-channel sums and maxima plus two per-input values (or, for a small layer,
a copy into a device buffer reduced once per block), finished once per block of inputs.
Every value is a reduction over one input's own outputs, so it never depends on the other
inputs of a forward (``probe_model`` keeps the forwards one size as well).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn as nn

from ml4ml import dims
from ml4ml.errors import InputError

__all__ = ["layer_statistics", "LayerRecorder", "SMALL_SPATIAL"]

# layers with fewer spatial positions than this are reduced over a (n, spatial, channel) copy
SMALL_SPATIAL = 32


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


class LayerRecorder:
    """Forward hooks that reduce each chosen layer's output into per-block buffers.

    ``start(first, last)`` before each forward names the block rows it fills;
    ``statistics(n_rows)`` returns the (layer, n_rows, 8) statistics of the block's first
    ``n_rows`` rows. Each layer output is reduced in the hook to per-channel sums and maxima
    and two per-row values (``_raw_statistics``), finished once per block.
    """

    def __init__(self, named_modules: list[tuple[str, nn.Module]], block_rows: int, device,
                 held_bytes: int = 8 * 2**20):
        n_layers = len(named_modules)
        self.held_bytes = held_bytes
        self.names = [name for name, _ in named_modules]
        self.enabled = True
        # optional per-feature-map variances (``feature_maps.FeatureMapMoments``)
        self.moments = None
        self.block_rows = block_rows
        self.device = device
        self.first = self.last = self.width = 0
        self.seen = [False] * n_layers
        self.row_shape: list[tuple | None] = [None] * n_layers
        self.spatial = [0] * n_layers
        self.out = torch.empty((n_layers, block_rows, len(dims.STATS)), dtype=torch.float32,
                               device=device)
        # raw per-channel and per-row buffers, allocated at the first output
        self.per_channel: list[torch.Tensor | None] = [None] * n_layers
        self.per_sample: list[torch.Tensor | None] = [None] * n_layers
        # a layer whose outputs for a whole block fit in ``held_bytes`` is copied
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
                    or output.shape[0] != self.width:
                found = (f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor)
                         else type(output).__name__)
                raise InputError(
                    f"layer {self.names[index]!r} must output a tensor (n_inputs, channel, ...) "
                    f"with one row per input ({self.width}); found {found}", field="layers",
                )
            output = output[:n_rows]  # the padding rows of a forward are not recorded
            self.seen[index] = True
            if self.row_shape[index] is None:
                self._allocate(index, output)
            elif tuple(output.shape[1:]) != self.row_shape[index]:
                raise InputError(f"layer {self.names[index]!r} changed its output shape per "
                                 f"input from {self.row_shape[index]} to "
                                 f"{tuple(output.shape[1:])}", field="layers")
            if self.moments is not None:
                self.moments.update(index, output)
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
        if self.block_rows * math.prod(row_shape) * 4 <= self.held_bytes:
            self.held[index] = torch.empty((self.block_rows,) + row_shape, **kwargs)
        else:
            self.scratch[index] = torch.empty(output.numel(), **kwargs)
        self.per_channel[index] = torch.empty((2, self.block_rows, row_shape[0]), **kwargs)
        self.per_sample[index] = torch.empty((2, self.block_rows), **kwargs)

    def start(self, first: int, last: int, width: int | None = None) -> None:
        """The next forward fills block rows ``first .. last - 1``; it holds ``width``
        inputs (default ``last - first``), the rest padding."""
        self.first, self.last = first, last
        self.width = last - first if width is None else width
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

    def channel_means(self, n_rows: int) -> list[torch.Tensor]:
        """Per layer, the (n_rows, channel) spatial mean of every channel of the block's
        first ``n_rows`` rows: the spatial sums ``statistics`` reduced, divided by the
        spatial size (no further pass over the outputs). Call after ``statistics``."""
        return [per_channel[0, :n_rows] / self.spatial[index]
                for index, per_channel in enumerate(self.per_channel)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
