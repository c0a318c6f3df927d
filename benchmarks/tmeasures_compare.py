"""ml4ml's probe plus every response measure against tmeasures 1.2.11's normalized variance.

Both sides get the same CNN5 (seeded random weights), the same digits and the same
rotation grid, and the same activations: the two convolutions ml4ml records by default
and the softmax output. tmeasures' transformation set applies ml4ml's own rotation
(``Transform.apply``) to each image, so only the tools differ, not the images.

- ml4ml: ``probe_model`` (every image at every angle, layer statistics, softmax), then
  ``response_measures`` (every built-in: tv, sv, nv, anova, goodfellow, G-EED, consistency,
  lee_fd) on the softmax (units: classes) and on the layers (units: their 8 statistics).
- tmeasures: ``NormalizedVarianceInvariance`` (its two passes, transformations-first and
  samples-first, with running variances per activation), averaged per feature map
  (``AverageFeatureMaps``), over the same layers.

Each side is timed ``--repeat`` times, alternately; the best times and their ratio are
printed, and the softmax's nv from both as a check that they measured the same thing.

    python benchmarks/tmeasures_compare.py                  # 500 digits x 31 angles
    python benchmarks/tmeasures_compare.py --images 200 --params 15 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
import xarray as xr

from ml4ml import dims
from ml4ml.data.suites import load_suite
from ml4ml.measure.responses import response_measures
from ml4ml.probe.responses import probe_model, select_layers
from ml4ml.probe.transforms import get_transform, validate_grid
from ml4ml.zoo.architectures import build_model


def setup(n_images: int, n_params: int):
    """(model, images, labels, transform, grid): CNN5 with seeded weights, digits, rotation
    by ``n_params`` angles from -15 to 15 degrees."""
    torch.manual_seed(0)
    model = build_model("cnn5", num_classes=10, in_channels=1, image_size=28).eval()
    suite = load_suite("digits", n_samples=n_images)
    transform = get_transform("rotation")
    grid = validate_grid(transform, np.linspace(-15.0, 15.0, n_params))
    return model, suite.images[:n_images], suite.labels[:n_images], transform, grid


def ml4ml_side(model, images, labels, transform, grid) -> tuple[float, float, xr.DataArray]:
    """Seconds of the probe and of every response measure; the softmax's measures."""
    start = time.perf_counter()
    probe = probe_model(model, images, labels, transform, grid)
    probed = time.perf_counter()
    identity = probe.sizes[dims.AUG_PARAM] // 2
    on_prob = response_measures(probe[dims.PROB].rename({dims.CLASS: dims.UNIT}),
                                identity_index=identity, predictions=probe[dims.PREDICTION])
    on_layers = response_measures(probe[dims.ACT].rename({dims.STAT: dims.UNIT}),
                                  identity_index=identity, predictions=probe[dims.PREDICTION])
    on_prob, _ = on_prob.compute(), on_layers.compute()
    return probed - start, time.perf_counter() - probed, on_prob


def tmeasures_side(model, images, transform, grid, batch_size: int):
    """Seconds of tmeasures' normalized variance over the same layers; its result."""
    import tmeasures as tm
    from tmeasures.pytorch.transformations import (
        PyTorchTransformation,
        PyTorchTransformationSet,
    )

    class Rotation(PyTorchTransformation):
        """One grid value of ml4ml's rotation, applied to one image (tmeasures' call)."""

        def __init__(self, angle: float):
            super().__init__()
            self.angle = torch.tensor([angle], dtype=torch.float64)

        def __call__(self, x):
            return transform.apply(x[None], self.angle)[0, 0]

        def parameters(self):
            return self.angle

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i]

    with_softmax = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    recorded = {dict(model.named_modules())[name] for name in select_layers(model)}
    recorded.add(with_softmax[1])
    activations = tm.pytorch.AutoActivationsModule(with_softmax,
                                                   filter=lambda module: module in recorded)
    transformations = PyTorchTransformationSet([Rotation(float(a)) for a in grid])
    options = tm.pytorch.PyTorchMeasureOptions(batch_size=batch_size, num_workers=0,
                                               verbose=False)
    measure = tm.pytorch.NormalizedVarianceInvariance(
        measure_transformation=tm.pytorch.AverageFeatureMaps())
    start = time.perf_counter()
    with torch.inference_mode():
        result = measure.eval(Images(), transformations, activations, options).numpy()
    return time.perf_counter() - start, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="digits (at most 599)")
    parser.add_argument("--params", type=int, default=31, help="rotation angles (odd)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each side")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="tmeasures' batch size (ml4ml uses its default, 256)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's own; on a busy "
                             "machine 1 avoids OpenMP threads waiting for each other)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")  # tmeasures' loaders, CPU
    model, images, labels, transform, grid = setup(args.images, args.params)
    # warm-up: each side's first call sets up what later calls reuse (threads, allocator)
    ml4ml_side(model, images[:8], labels[:8], transform, grid[len(grid) // 2 - 1:][:3])
    tmeasures_side(model, images[:8], transform, grid[len(grid) // 2 - 1:][:3], args.batch_size)
    best = {"probe": np.inf, "responses": np.inf, "ml4ml": np.inf, "tmeasures": np.inf}
    for attempt in range(args.repeat):
        probe_s, responses_s, on_prob = ml4ml_side(model, images, labels, transform, grid)
        theirs_s, theirs = tmeasures_side(model, images, transform, grid, args.batch_size)
        best = {"probe": min(best["probe"], probe_s),
                "responses": min(best["responses"], responses_s),
                "ml4ml": min(best["ml4ml"], probe_s + responses_s),
                "tmeasures": min(best["tmeasures"], theirs_s)}
        print(f"run {attempt + 1} ({torch.get_num_threads()} torch threads): ml4ml {probe_s + responses_s:.2f} s (probe {probe_s:.2f} s "
              f"+ every response measure {responses_s:.2f} s); tmeasures nv {theirs_s:.2f} s")
    ours_nv = float(on_prob.sel({"response_measure": "nv"}))
    softmax = theirs.layers[-1]  # the last recorded activation: the softmax, per class
    print(f"softmax nv (mean over classes): ml4ml {ours_nv:.6f}, tmeasures "
          f"{float(np.mean(softmax)):.6f}")
    print(f"best of {args.repeat}, CNN5, {len(images)} digits x {len(grid)} angles: ml4ml "
          f"{best['ml4ml']:.2f} s (probe {best['probe']:.2f} + responses "
          f"{best['responses']:.2f}), tmeasures {best['tmeasures']:.2f} s: tmeasures / ml4ml = "
          f"{best['tmeasures'] / best['ml4ml']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
