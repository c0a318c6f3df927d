"""tmeasures' per-feature-map variances of every recorded channel, accumulated as the probe runs.

tmeasures 1.2.11 measures a convolution's normalized variance per feature map
(``AverageFeatureMaps``) by measuring every position (channel, height, width) alone and
then averaging the transformational and sample variances over each map:

    tv_c = mean over samples s and positions p of  std over grid values k of x[k, s, c, p]
    sv_c = mean over grid values k and positions p of  std over samples s of x[k, s, c, p]

(unbiased stds), nv_c = tv_c / sv_c with its rules for 0/0 and x/0. Neither is a function
of the channel's spatial mean, so ``FeatureMapMoments`` accumulates them from the layer
outputs themselves, in float64 on the device: per sample of the current batch of images,
sums and sums of squares over the grid (finished when the batch's grid is complete); per
grid value, sums and sums of squares over the samples (finished at the end).
"""

from __future__ import annotations

import torch

__all__ = ["FeatureMapMoments"]


class FeatureMapMoments:
    """Per layer and channel, tmeasures' per-feature-map ``tv`` and ``sv`` sums.

    ``start_batch(n_images)`` before a batch of images (transformed to the whole grid,
    rows ordered (grid value, image)); ``at`` is the batch position of the next forward's
    first row; ``update(layer, output)`` from the layer's forward hook; ``finish_batch()``
    once every row of the batch ran; ``result()`` -> per layer (tv (channel,), sv
    (channel,)) float64 on the CPU.
    """

    def __init__(self, n_layers: int, n_params: int, device):
        self.n_layers, self.n_params, self.device = n_layers, n_params, device
        self.n_images = 0  # of the current batch
        self.n_samples = 0  # of every finished batch
        self.at = 0
        self.by_sample: list[torch.Tensor | None] = [None] * n_layers  # (2, images, C, HW)
        self.by_param: list[torch.Tensor | None] = [None] * n_layers  # (2, P, C, HW)
        self.tv_sum: list[torch.Tensor | None] = [None] * n_layers  # (C,)

    def start_batch(self, n_images: int) -> None:
        self.n_images, self.at = int(n_images), 0
        for sums in self.by_sample:
            if sums is not None:
                sums.zero_()

    def update(self, index: int, output: torch.Tensor) -> None:
        """Add a forward's ``output`` (n, channel, *spatial) rows ``at .. at + n - 1``."""
        n, channels = output.shape[:2]
        values = output.reshape(n, channels, -1).to(torch.float64)
        if self.by_param[index] is None:
            kw = {"dtype": torch.float64, "device": values.device}
            spatial = values.shape[2]
            self.by_param[index] = torch.zeros((2, self.n_params, channels, spatial), **kw)
            self.tv_sum[index] = torch.zeros(channels, **kw)
        if self.by_sample[index] is None or self.by_sample[index].shape[1] < self.n_images:
            self.by_sample[index] = torch.zeros((2,) + (self.n_images,) + values.shape[1:],
                                                dtype=torch.float64, device=values.device)
        squares = values * values
        by_sample, by_param = self.by_sample[index], self.by_param[index]
        # the rows run through grid values in order, each over the batch's images: a
        # partial run of one grid value, whole runs (a (grid value, image) block), a
        # partial run; slice adds (index_add_ is several times slower)
        first = 0
        while first < n:
            param, image = divmod(self.at + first, self.n_images)
            whole = (n - first) // self.n_images if image == 0 else 0
            if whole:
                last = first + whole * self.n_images
                shape = (whole, self.n_images) + tuple(values.shape[1:])
                block, squared = values[first:last].view(shape), squares[first:last].view(shape)
                by_sample[0, :self.n_images] += block.sum(dim=0)
                by_sample[1, :self.n_images] += squared.sum(dim=0)
                by_param[0, param:param + whole] += block.sum(dim=1)
                by_param[1, param:param + whole] += squared.sum(dim=1)
            else:
                last = min(n, first + self.n_images - image)
                segment, squared = values[first:last], squares[first:last]
                by_sample[0, image:image + last - first] += segment
                by_sample[1, image:image + last - first] += squared
                by_param[0, param] += segment.sum(dim=0)
                by_param[1, param] += squared.sum(dim=0)
            first = last

    def finish_batch(self) -> None:
        """The batch's std over the grid at every (image, channel, position), summed."""
        for index, sums in enumerate(self.by_sample):
            if sums is None:
                continue
            std = _std(sums[:, :self.n_images], self.n_params)
            self.tv_sum[index] += std.sum(dim=(0, 2))
        self.n_samples += self.n_images

    def result(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (tv (channel,), sv (channel,)) float64 on the CPU."""
        out = []
        for index in range(self.n_layers):
            by_param = self.by_param[index]
            spatial = by_param.shape[3]
            tv = self.tv_sum[index] / (self.n_samples * spatial)
            sv = _std(by_param, self.n_samples).mean(dim=(0, 2))
            out.append((tv.cpu(), sv.cpu()))
        return out


def _std(sums: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased std of ``n`` values from their sum and sum of squares (``sums[0]``,
    ``sums[1]``); 0 for one value (tmeasures' running variance)."""
    if n < 2:
        return torch.zeros_like(sums[0])
    variance = (sums[1] - sums[0] * sums[0] / n) / (n - 1)
    return variance.clamp_(min=0).sqrt_()
