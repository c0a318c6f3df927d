"""Benchmark: probe_model throughput against a forward-only pass over the same inputs.

For each model the probe (transform on the device + hooks + statistics + softmax + result
arrays) is timed over ``--images`` images x ``--params`` grid values; the baseline is the
model alone (no hooks, inference_mode) over the same number of already-transformed inputs
in the same chunks as the probe feeds the model (``ml4ml.probe.forward_sizes``: at most
``--batch-size`` inputs per forward). Both are reported as images x parameters per second,
with their ratio (goal on CPU: probe time <= 1.15 x forward-only time).

The two are timed alternately ``--repeats`` times; the ratio reported is the median of the
per-pair ratios (each probe against the forward pass timed just before it, so a shared or
throttled machine slows both), next to the ratio of the best times.

    python benchmarks/probe.py                       # CPU, both models
    python benchmarks/probe.py --device cuda --images 2048
    python benchmarks/probe.py --models cnn5 --params 31 --images 512 --repeats 5
    python benchmarks/probe.py --models cnn5 --workers 2
    python benchmarks/probe.py --models cnn5 --transforms corruptions --repeats 5

``--transforms a,b,...`` (or ``corruptions``: the 15 common corruptions) runs the comparison
for each family in turn (one-sided families at severities 0..5, others over ``--params``
values) and also times the transformation alone over the same images and grid: its line
reports ``forward / (forward + transform)``, the throughput of transform-then-forward as a
fraction of forward-only (the issue-28 goal: >= 0.8 on CNN5 with 2 threads).

``--workers N`` compares the probe in N dask workers (a LocalCluster of N single-thread
processes, as ``ml4ml probe --workers N`` runs it) with N plain processes of one torch
thread each, all N running at once in both cases: the probe's throughput per core in a
worker against that in a plain process (goal: within 10%). The two are run alternately
``--rounds`` times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn as nn

from ml4ml.probe.responses import forward_sizes, probe_model
from ml4ml.probe.transforms import get_transform, validate_grid


class LocalCNN5(nn.Module):
    """Fallback CNN5 (conv 6@5x5, pool, conv 16@5x5, pool, conv 32@3x3, FC 64, FC classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(32 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class LocalVGG13BN(nn.Module):
    """Fallback: torchvision vgg13_bn features, global average pooling, Linear(512, classes)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        from torchvision.models import vgg13_bn

        self.features = vgg13_bn().features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def build(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """(model, (channel, height, width)) for ``cnn5`` (digits) or ``vgg13bn`` (CIFAR shape)."""
    try:
        from ml4ml.zoo.architectures import build_model
    except ImportError:
        build_model = None
    if name == "cnn5":
        model = (build_model("cnn5", num_classes=10, in_channels=1, image_size=28)
                 if build_model else LocalCNN5())
        return model, (1, 28, 28)
    if name == "vgg13bn":
        model = (build_model("vgg13bn", num_classes=10, in_channels=3)
                 if build_model else LocalVGG13BN())
        return model, (3, 32, 32)
    raise SystemExit(f"unknown model {name!r}; expected cnn5 or vgg13bn")


def test_images(shape, n_images: int):
    """Digits (28x28x1) from the embedded suite, else seeded uniform random images."""
    if shape == (1, 28, 28):
        from ml4ml.data.suites import load_suite

        suite = load_suite("digits", n_samples=min(n_images, 599))
        images, labels = suite.images, suite.labels
        while len(images) < n_images:
            images, labels = torch.cat([images, images]), torch.cat([labels, labels])
        return images[:n_images].contiguous(), labels[:n_images].contiguous()
    g = torch.Generator().manual_seed(0)
    return (torch.rand((n_images,) + shape, generator=g),
            torch.randint(0, 10, (n_images,), generator=g))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_only(model, stacked: torch.Tensor, sizes: list[int], device) -> float:
    """Seconds for the model alone over ``stacked`` (already transformed, on the device),
    in forward passes of ``sizes`` inputs."""
    model.eval()
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        first = 0
        for size in sizes:
            model(stacked[first:first + size])
            first += size
    _sync(device)
    return time.perf_counter() - start


def time_probe(model, images, labels, transform, grid, batch_size, device) -> float:
    _sync(device)
    start = time.perf_counter()
    probe_model(model, images, labels, transform, grid, batch_size=batch_size, device=device)
    _sync(device)
    return time.perf_counter() - start


def family_grid(transform, n_params: int) -> np.ndarray:
    """The benchmark's grid: severities 0..5 for a one-sided family, else ``n_params``
    values symmetric about the identity."""
    if transform.identity_at == "start":
        return validate_grid(transform, np.arange(0, 6))
    span = {"rotation": 15.0, "translation": 5.0, "blur": 2.0}.get(transform.name, 0.3)
    return validate_grid(transform, np.linspace(transform.identity - span,
                                                transform.identity + span, n_params))


def time_transform(transform, images, grid, device) -> float:
    """Seconds to transform ``images`` (on the device) to every value of ``grid``."""
    ids = torch.arange(len(images))
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        transform(images, torch.from_numpy(grid), sample_ids=ids)
    _sync(device)
    return time.perf_counter() - start


def run(name: str, args, family: str | None = None) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, shape = build(name)
    model.to(device).eval()
    transform = get_transform(family or args.transform)
    grid = family_grid(transform, args.params)
    n_images = args.images or (512 if name == "cnn5" else 64)
    images, labels = test_images(shape, n_images)

    # the same inputs, transformed beforehand, for the forward-only baseline
    with torch.inference_mode():
        stacked = transform(images.to(device), torch.from_numpy(grid),
                            sample_ids=torch.arange(n_images))
        stacked = stacked.reshape((-1,) + shape).contiguous()
    sizes = forward_sizes(n_images, len(grid), args.batch_size, images[0].numel())
    # warm up both paths (allocator, oneDNN/cuDNN primitives)
    time_probe(model, images, labels, transform, grid, args.batch_size, device)
    time_forward_only(model, stacked, sizes, device)

    on_device = images.to(device)
    time_transform(transform, on_device, grid, device)
    probe_s, forward_s, transform_s = [], [], []
    for _ in range(args.repeats):  # alternately (the machine may be shared)
        forward_s.append(time_forward_only(model, stacked, sizes, device))
        transform_s.append(time_transform(transform, on_device, grid, device))
        probe_s.append(time_probe(model, images, labels, transform, grid, args.batch_size,
                                  device))
    n_inputs = n_images * len(grid)
    forward, transformed = np.array(forward_s), np.array(transform_s)
    result = {
        "model": name, "device": str(device), "threads": torch.get_num_threads(),
        "images": n_images, "params": len(grid), "transform": transform.name,
        "probe_per_s": n_inputs / min(probe_s), "forward_per_s": n_inputs / min(forward_s),
        "ratio": float(np.median(np.array(probe_s) / forward)),
        "ratio_of_best": min(probe_s) / min(forward_s),
        "transform_s": float(np.median(transformed)),
        "forward_share": float(np.median(forward / (forward + transformed))),
    }
    threads = f"{result['threads']} thr" if device.type == "cpu" else ""
    print(f"{name:8s} {result['device']:6s} {threads:5s} {n_images:5d} images x {len(grid)} "
          f"{transform.name}: probe {result['probe_per_s']:8.0f}/s  forward-only "
          f"{result['forward_per_s']:8.0f}/s  probe/forward time {result['ratio']:.3f} "
          f"(best times {result['ratio_of_best']:.3f})  transform alone "
          f"{1e3 * result['transform_s']:7.1f} ms: forward/(forward+transform) "
          f"{result['forward_share']:.3f}", flush=True)
    return result


def timed_probes(name: str, n_images: int, n_params: int, batch_size: int, repeats: int,
                 threads: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` probes (after a warm-up) of model ``name``, run the
    way the probe stage runs a model in a worker (``prepare_dask_worker``, ``threads``)."""
    from ml4ml.cluster import prepare_dask_worker, torch_threads

    prepare_dask_worker()  # a no-op in a plain process
    with torch_threads(threads):
        torch.manual_seed(0)
        model, shape = build(name)
        model.eval()
        transform = get_transform("rotation")
        grid = validate_grid(transform, np.linspace(-15.0, 15.0, n_params))
        images, labels = test_images(shape, n_images)
        device = torch.device("cpu")
        time_probe(model, images, labels, transform, grid, batch_size, device)
        return [time_probe(model, images, labels, transform, grid, batch_size, device)
                for _ in range(repeats)]


def _in_process(queue, *args):
    queue.put(timed_probes(*args))


def run_workers(name: str, args) -> dict:
    """Per-core probe throughput: N dask workers against N plain processes, both at once."""
    import multiprocessing

    from dask.distributed import Client, LocalCluster

    n_images = args.images or (512 if name == "cnn5" else 64)
    job = (name, n_images, args.params, args.batch_size, args.repeats)
    n_inputs = n_images * args.params
    context = multiprocessing.get_context("spawn")
    plain, worker = [], []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        addresses = list(client.scheduler_info()["workers"])
        for round_ in range(args.rounds):
            queue = context.Queue()
            processes = [context.Process(target=_in_process, args=(queue, *job))
                         for _ in range(args.workers)]
            for p in processes:
                p.start()
            seconds = [queue.get() for _ in processes]
            for p in processes:
                p.join()
            plain.append(n_inputs / np.median(seconds))
            futures = [client.submit(timed_probes, *job, workers=[a], pure=False,
                                     key=f"timed-probes-{round_}-{i}")
                       for i, a in enumerate(addresses)]
            worker.append(n_inputs / np.median(client.gather(futures)))
            print(f"round {round_ + 1}: per core, plain process {plain[-1]:8.0f}/s, dask "
                  f"worker {worker[-1]:8.0f}/s ({worker[-1] / plain[-1]:.3f})", flush=True)
    ratio = float(np.median(np.array(worker) / np.array(plain)))
    print(f"{name}: {args.workers} at once, 1 thread each, {n_images} images x "
          f"{args.params}: per-core throughput in a dask worker / in a plain process = "
          f"{ratio:.3f} (median of {args.rounds} rounds; goal >= 0.90)", flush=True)
    return {"model": name, "workers": args.workers, "plain_per_s": float(np.median(plain)),
            "worker_per_s": float(np.median(worker)), "ratio": ratio}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    parser.add_argument("--params", type=int, default=31, help="grid size (odd), default 31")
    parser.add_argument("--images", type=int, default=0,
                        help="images per model (default 512 for cnn5, 64 for vgg13bn)")
    parser.add_argument("--batch-size", type=int, default=256, help="model inputs per forward")
    parser.add_argument("--transform", default="rotation", help="family, default rotation")
    parser.add_argument("--transforms", default="",
                        help="comma-separated families to run in turn, or 'corruptions'")
    parser.add_argument("--models", default="cnn5,vgg13bn", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=9, help="timed pairs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0,
                        help="compare N dask workers with N plain processes (1 thread each)")
    parser.add_argument("--rounds", type=int, default=3, help="with --workers: rounds")
    args = parser.parse_args(argv)
    if args.workers:
        return [run_workers(name, args) for name in args.models.split(",")]
    torch.set_num_threads(args.threads)
    families = [None]
    if args.transforms:
        from ml4ml.probe.corruptions import CORRUPTIONS, FAMILY_NAMES

        families = [f for word in args.transforms.split(",") for f in (
            [FAMILY_NAMES[c] for c in CORRUPTIONS] if word == "corruptions" else [word])]
    return [run(name, args, family) for name in args.models.split(",") for family in families]


if __name__ == "__main__":
    main()
