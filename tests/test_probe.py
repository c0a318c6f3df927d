"""probe_model against a plain per-image torchvision loop, and its validation."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from ml4ml import dims
from ml4ml.zoo.attacks import fgsm
from ml4ml.errors import InputError
from ml4ml.probe.responses import forward_sizes, layer_statistics, probe_model, select_layers
from ml4ml.data.suites import load_suite
from ml4ml.probe.transforms import torchvision_equivalent

torch.set_num_threads(min(2, torch.get_num_threads()))
N_IMAGES = 64
ROTATIONS = np.arange(-15.0, 16.0)  # 31 values

# family -> (grid, torchvision's transform of one (C, H, W) image by one parameter)
GRIDS = {"rotation": ROTATIONS, "scaling": np.linspace(0.7, 1.3, 31),
         "translation": np.linspace(-6.0, 6.0, 25), "brightness": np.linspace(0.7, 1.3, 31),
         "contrast": np.linspace(0.7, 1.3, 31), "blur": np.linspace(-2.0, 2.0, 21)}
REFERENCE = {name: (grid, torchvision_equivalent(name)) for name, grid in GRIDS.items()}



class TinyCNN(nn.Module):
    """Three convs (the first with batch norm), 2x2 average pooling, a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@pytest.fixture(scope="module")
def model():
    """TinyCNN trained briefly on the digits train split (seeded), so predictions vary."""
    torch.manual_seed(0)
    net = TinyCNN()
    train = load_suite("digits", "train", n_samples=600)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for epoch in range(4):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(train), 50):
            idx = order[start:start + 50]
            loss = nn.functional.cross_entropy(net(train.images[idx]), train.labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


@pytest.fixture(scope="module")
def suite():
    s = load_suite("digits", n_samples=N_IMAGES)
    return s.images, s.labels


def reference_probe(model, images, labels, transform_one, grid, *, normalize=None,
                    layers=("features.4", "features.7")):
    """Per image, per parameter: torchvision's transform, the model, softmax; full activations."""
    modules = dict(model.named_modules())
    captured = {name: [] for name in layers}
    handles = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: captured[name].append(o.detach().clone()))
        for name in layers]
    probs = []
    try:
        with torch.no_grad():
            for p in grid:
                x = torch.stack([transform_one(img, float(p)) for img in images])
                if normalize is not None:
                    x = (x - normalize[0]) / normalize[1]
                probs.append(torch.softmax(model(x), dim=1))
    finally:
        for h in handles:
            h.remove()
    activations = {name: torch.stack(captured[name]) for name in layers}  # (P, n, C, H, W)
    return torch.stack(probs).numpy(), activations


def numpy_statistics(z: np.ndarray) -> np.ndarray:
    """The 8 statistics of MEASURES.md in float64, per leading index: (..., C, H, W) -> (..., 8)."""
    z = z.astype(np.float64)
    flat = z.reshape(z.shape[:-3] + (-1,))
    per_channel = z.reshape(z.shape[:-2] + (-1,))
    mu, top = per_channel.mean(-1), per_channel.max(-1)
    return np.stack([flat.mean(-1), flat.std(-1), flat.max(-1), flat.min(-1),
                     mu.max(-1), mu.std(-1), top.mean(-1), top.std(-1)], axis=-1)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_probabilities_match_per_image_torchvision_loop(model, suite, name):
    images, labels = suite
    grid, transform_one = REFERENCE[name]
    ds = probe_model(model, images, labels, name, grid, batch_size=200)
    expected, _ = reference_probe(model, images, labels, transform_one, grid)
    diff = float(np.abs(ds[dims.PROB].values - expected).max())
    assert diff <= 1e-5, f"max |prob - torchvision loop| = {diff:.2e}"
    np.testing.assert_array_equal(ds[dims.PREDICTION].values, expected.argmax(-1))
    assert len(np.unique(ds[dims.PREDICTION].values)) > 3  # the model does discriminate
    assert not np.allclose(expected[0], expected[len(grid) // 2])  # the transform matters


def test_statistics_match_full_activations(model, suite):
    images, labels = suite
    grid, transform_one = REFERENCE["rotation"]
    ds = probe_model(model, images, labels, "rotation", grid, batch_size=100)
    _, activations = reference_probe(model, images, labels, transform_one, grid)
    assert list(ds[dims.LAYER_NAME].values) == ["features.4", "features.7"]
    for index, name in enumerate(["features.4", "features.7"]):
        expected = numpy_statistics(activations[name].numpy())
        np.testing.assert_allclose(ds[dims.ACT].values[:, :, index], expected,
                                   rtol=1e-4, atol=1e-5)


def test_layer_statistics_of_a_known_tensor():
    z = torch.tensor([[[[1.0, 3.0]], [[-2.0, 6.0]]]])  # (1, 2, 1, 2): mu = (2, 2), M = (3, 6)
    stats = layer_statistics(z)[0].double().numpy()
    values = np.array([1.0, 3.0, -2.0, 6.0])
    expected = [values.mean(), values.std(), 6.0, -2.0, 2.0, 0.0, 4.5, 1.5]
    np.testing.assert_allclose(stats, expected, rtol=1e-6)
    # channels_last and 2-D (features read as channels x 1x1) give the same numbers
    for shape in [(5, 7, 4, 3), (5, 7, 8, 9)]:  # small and large spatial extents
        z4 = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(layer_statistics(z4.to(memory_format=torch.channels_last)),
                                   layer_statistics(z4))
        # any other strides too (a transposed view)
        torch.testing.assert_close(layer_statistics(z4.transpose(2, 3)),
                                   layer_statistics(z4.transpose(2, 3).contiguous()))
    np.testing.assert_allclose(layer_statistics(z4).numpy(), numpy_statistics(z4.numpy()),
                               rtol=1e-5, atol=1e-6)
    z2 = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(layer_statistics(z2).numpy(),
                               numpy_statistics(z2.numpy()[:, :, None, None]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("offset", [0.0, 3.0, 1000.0])
def test_std_over_all_values_is_exact_for_any_mean(offset):
    # with mean^2 / variance = 4e6 (offset 1000) a sum of squares would lose every digit
    g = torch.Generator().manual_seed(1)
    z = offset + 0.5 * torch.randn(64, 16, 8, 8, generator=g)
    z[5] = offset  # a constant row: std exactly 0
    expected = numpy_statistics(z.numpy())
    stats = layer_statistics(z).double().numpy()
    # float32 spaces values near the offset by ulp(offset): relative to the spread (0.5) that
    # is the inputs' own resolution (1.2e-4 at 1000); the std must be well within it
    rtol = 2e-6 + 0.2 * float(np.spacing(np.float32(offset))) / 0.5
    np.testing.assert_allclose(stats[:, 1], expected[:, 1], rtol=rtol, atol=1e-9)
    assert stats[5, 1] == 0.0
    # the other statistics come from float32 per-channel sums: exact relative to the offset
    np.testing.assert_allclose(stats, expected, rtol=2e-6, atol=1e-5 * (1 + offset))


def test_statistics_of_a_row_do_not_depend_on_the_other_rows():
    # a batch mixing small and large means (and a small spatial extent, reduced from a
    # transposed copy) gives each row the numbers it has alone
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 4, 5, 5, generator=g)
    z[3] += 500.0
    together = layer_statistics(z)
    alone = torch.cat([layer_statistics(z[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(together[:, 1].double().numpy(),
                               numpy_statistics(z.numpy())[:, 1], rtol=1e-5)


def test_default_layers_are_the_last_two_convs(model):
    assert select_layers(model) == ["features.4", "features.7"]
    single = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    assert select_layers(single) == ["0"]


def test_named_layers_in_the_given_order(model, suite):
    images, labels = suite
    layers = ["classifier", "features.0", "features.2"]
    ds = probe_model(model, images[:8], labels[:8], "rotation", [-5, 0, 5], layers=layers)
    assert list(ds[dims.LAYER_NAME].values) == layers
    assert ds[dims.LAYER_NAME].dtype == object
    captured = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(
        lambda m, i, o, n=n: captured.__setitem__(n, o.detach().clone())) for n in layers]
    with torch.no_grad():
        logits = model(images[:8])
    for h in handles:
        h.remove()
    centre = ds[dims.ACT].sel({dims.AUG_PARAM: 0.0}).values
    for index, name in enumerate(layers):
        z = captured[name].numpy()
        z = z[:, :, None, None] if z.ndim == 2 else z
        np.testing.assert_allclose(centre[:, index], numpy_statistics(z), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds[dims.PROB].sel({dims.AUG_PARAM: 0.0}).values,
                               torch.softmax(logits, 1).numpy(), atol=1e-6)


def test_normalize_is_applied_after_the_transform(model, suite):
    images, labels = suite
    grid, transform_one = REFERENCE["brightness"]
    normalize = (0.2, 0.3)
    ds = probe_model(model, images, labels, "brightness", grid, normalize=normalize)
    expected, _ = reference_probe(model, images, labels, transform_one, grid, normalize=normalize)
    np.testing.assert_allclose(ds[dims.PROB].values, expected, atol=1e-5, rtol=0)
    plain = probe_model(model, images, labels, "brightness", grid)
    assert not np.allclose(plain[dims.PROB].values, ds[dims.PROB].values, atol=1e-3)


def test_fgsm_perturbs_the_untransformed_images(model, suite):
    images, labels = suite
    grid = [-10.0, 0.0, 10.0]
    eps, normalize = 0.1, ((0.1,), (0.5,))
    clean = probe_model(model, images, labels, "rotation", grid, normalize=normalize)
    attacked = probe_model(model, images, labels, "rotation", grid, normalize=normalize,
                           fgsm_epsilon=eps, batch_size=len(grid) * N_IMAGES)
    assert (clean[dims.PREDICTION].values != attacked[dims.PREDICTION].values).sum() > 10
    assert attacked.attrs["fgsm_epsilon"] == eps
    perturbed = fgsm(model, images, labels, eps, normalize=normalize)
    pre = probe_model(model, perturbed, labels, "rotation", grid, normalize=normalize,
                      batch_size=len(grid) * N_IMAGES)
    np.testing.assert_array_equal(pre[dims.PROB].values, attacked[dims.PROB].values)
    np.testing.assert_array_equal(pre[dims.ACT].values, attacked[dims.ACT].values)


def test_dataset_layout(model, suite):
    images, labels = suite
    ids = np.arange(100, 100 + 16)
    ds = probe_model(model, images[:16].numpy(), labels[:16].numpy(), "scaling",
                     np.linspace(0.8, 1.2, 5), sample_ids=ids)
    assert dict(ds.sizes) == {dims.AUG_PARAM: 5, dims.SAMPLE: 16, dims.CLASS: 10,
                              dims.LAYER: 2, dims.STAT: 8}
    assert ds[dims.PROB].dims == (dims.AUG_PARAM, dims.SAMPLE, dims.CLASS)
    assert ds[dims.ACT].dims == (dims.AUG_PARAM, dims.SAMPLE, dims.LAYER, dims.STAT)
    assert ds[dims.PREDICTION].dims == ds[dims.CONFIDENCE].dims == (dims.AUG_PARAM, dims.SAMPLE)
    assert ds[dims.PROB].dtype == ds[dims.ACT].dtype == ds[dims.CONFIDENCE].dtype == np.float32
    assert ds[dims.PREDICTION].dtype == np.int64
    assert ds[dims.AUG_PARAM].dtype == np.float64
    assert ds[dims.AUG_PARAM].attrs == {"units": "factor", "transform": "scaling",
                                        "long_name": "transformation parameter",
                                        "description": dims.DESCRIPTIONS[dims.AUG_PARAM][1]}
    np.testing.assert_array_equal(ds[dims.LAYER].values, [0, 1])
    assert ds.attrs == {"transform": "scaling", "fgsm_epsilon": 0.0}  # units: on aug_param
    for name in ds.variables:
        assert ds[name].attrs["long_name"] and ds[name].attrs["description"], name
    assert ds[dims.AUG_PARAM].values[2] == 1.0
    np.testing.assert_array_equal(ds[dims.SAMPLE].values, ids)
    np.testing.assert_array_equal(ds[dims.LABEL].values, labels[:16].numpy())
    assert ds[dims.LABEL].dims == (dims.SAMPLE,) and ds[dims.LABEL].dtype == np.int64
    assert tuple(ds[dims.STAT].values) == dims.STATS and ds[dims.STAT].dtype == object
    np.testing.assert_array_equal(ds[dims.CLASS].values, np.arange(10))
    prob = ds[dims.PROB].values
    np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(ds[dims.PREDICTION].values, prob.argmax(-1))
    np.testing.assert_array_equal(ds[dims.CONFIDENCE].values, prob.max(-1))
    np.testing.assert_array_equal(ds[dims.SAMPLE].values, ids)
    assert ds.attrs["transform"] == "scaling"


def test_batch_size_does_not_change_results_and_progress_is_reported(model, suite,
                                                                    monkeypatch):
    import ml4ml.probe.responses as probe_module

    monkeypatch.setattr(probe_module, "TRANSFORM_BATCHES", 1)  # 16 // 9: an image a batch
    images, labels = suite
    images, labels = images[:10], labels[:10]
    grid = np.arange(-4.0, 5.0)
    calls = []

    class Bar:
        total = 0

        def update(self, n):
            self.total += n

    bar = Bar()
    small = probe_model(model, images, labels, "translation", grid, batch_size=4,
                        progress=lambda done, total: calls.append((done, total)))
    large = probe_model(model, images, labels, "translation", grid, batch_size=1000,
                        progress=bar)
    np.testing.assert_allclose(small[dims.PROB].values, large[dims.PROB].values, atol=1e-6)
    np.testing.assert_allclose(small[dims.ACT].values, large[dims.ACT].values,
                               rtol=1e-5, atol=1e-6)
    assert calls == [(k, 10) for k in range(1, 11)]
    assert bar.total == 10


def test_statistics_blocks_do_not_change_results(model, suite, monkeypatch):
    import ml4ml.probe.responses as probe_module

    images, labels = suite
    images, labels = images[:11], labels[:11]
    grid = np.arange(-4.0, 5.0)
    one_block = probe_model(model, images, labels, "rotation", grid, batch_size=20)
    monkeypatch.setattr(probe_module, "STATS_BLOCK_ROWS", 40)
    # 8 images (72 rows, in forwards of 20) per batch, one batch per block: 2 blocks, the
    # last short; then 2 images (18 rows) per batch, 2 batches per block: 3 blocks
    for transform_batches in (4, 1):
        monkeypatch.setattr(probe_module, "TRANSFORM_BATCHES", transform_batches)
        blocks = probe_model(model, images, labels, "rotation", grid, batch_size=20)
        np.testing.assert_allclose(blocks[dims.ACT].values, one_block[dims.ACT].values,
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(blocks[dims.PROB].values, one_block[dims.PROB].values,
                                   atol=1e-7)
    # (ATen kernels) layers reduced after every forward, or all held on the device and
    # reduced once a block
    for held_bytes in (0, 2**40):
        monkeypatch.setattr(probe_module, "HELD_LAYER_BYTES", held_bytes)
        other = probe_model(model, images, labels, "rotation", grid, batch_size=20)
        np.testing.assert_allclose(other[dims.ACT].values, one_block[dims.ACT].values,
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n_images, batch_size, transform_bytes",
                         [(11, 20, 2**26), (7, 1000, 2**26), (5, 4, 2**26), (9, 50, 28 * 28 * 4 * 9)])
def test_forward_sizes_are_the_forwards_probe_model_makes(model, suite, monkeypatch,
                                                          n_images, batch_size, transform_bytes):
    import ml4ml.probe.responses as probe_module

    monkeypatch.setattr(probe_module, "TRANSFORM_BYTES", transform_bytes)
    images, labels = suite
    grid = np.arange(-4.0, 5.0)
    seen = []
    handle = model.register_forward_hook(lambda module, inputs, output: seen.append(len(output)))
    try:
        probe_model(model, images[:n_images], labels[:n_images], "rotation", grid,
                    batch_size=batch_size)
    finally:
        handle.remove()
    expected = forward_sizes(n_images, len(grid), batch_size, 28 * 28)
    assert seen[1:] == expected  # the first forward counts the classes
    # every forward the same size (the last of a batch of images padded), at least 16
    width = expected[0]
    assert set(expected) == {width} and 16 <= width <= max(batch_size, 16)
    assert n_images * len(grid) <= sum(expected) < n_images * len(grid) + len(expected) * width


def test_channels_last_model_gives_the_same_responses(model, suite):
    import copy

    images, labels = suite
    images, labels = images[:20], labels[:20]
    grid = np.linspace(-10.0, 10.0, 5)
    expected = probe_model(model, images, labels, "rotation", grid)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    found = probe_model(nhwc, images, labels, "rotation", grid)
    np.testing.assert_allclose(found[dims.PROB].values, expected[dims.PROB].values, atol=1e-5)
    np.testing.assert_allclose(found[dims.ACT].values, expected[dims.ACT].values,
                               rtol=1e-4, atol=1e-5)


def test_model_mode_and_hooks_restored(suite):
    images, labels = suite
    torch.manual_seed(1)
    net = TinyCNN().train()
    probe_model(net, images[:4], labels[:4], "rotation", [-5, 0, 5])
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_user_registered_transform_is_probed(model, suite):
    from ml4ml.probe import transforms

    def shift_down(images, params):
        return torch.stack([torch.roll(images, int(p), dims=2) for p in params.tolist()])

    transforms.register_transform(transforms.Transform("roll_down", "pixels", 0.0, shift_down))
    try:
        images, labels = suite
        ds = probe_model(model, images[:6], labels[:6], "roll_down", [-2, 0, 2])
        expected = torch.softmax(model(torch.roll(images[:6], 2, dims=2)), 1).detach().numpy()
        np.testing.assert_allclose(ds[dims.PROB].values[2], expected, atol=1e-6)
        assert ds[dims.AUG_PARAM].attrs["units"] == "pixels"
    finally:
        transforms._REGISTRY.pop("roll_down")


# ---------------------------------------------------------------------------------------
# error paths


def _call(model, suite, **overrides):
    images, labels = suite
    kwargs = dict(images=images[:4], labels=labels[:4], transform="rotation",
                  params=[-5, 0, 5])
    kwargs.update(overrides)
    return probe_model(model, kwargs.pop("images"), kwargs.pop("labels"),
                       kwargs.pop("transform"), kwargs.pop("params"), **kwargs)


@pytest.mark.parametrize("overrides, message", [
    (dict(transform="shear"), r"field 'transform': unknown transform 'shear'; expected one of"),
    (dict(params=[-5, 0]), r"field 'params': expected an odd number .* found 2 values"),
    (dict(params=[0, 5, 10]), r"found 5 at the centre"),
    (dict(params=[5, 0, -5]), r"strictly ascending"),
    (dict(images=torch.rand(4, 28, 28)), r"field 'images': .*\(n_samples, channel, height, "
                                         r"width\).*found \(4, 28, 28\)"),
    (dict(images=torch.rand(0, 1, 28, 28), labels=[]), r"n_samples > 0; found \(0, 1, 28, 28\)"),
    (dict(images=torch.rand(4, 1, 28, 28) * 2), r"must lie in \[0, 1\]; found values in"),
    (dict(images=torch.full((4, 1, 28, 28), float("nan"))), r"found 3136 NaN or infinite"),
    (dict(images=torch.zeros(4, 1, 28, 28, dtype=torch.uint8)), r"float in \[0, 1\]; found "
                                                                 r"dtype torch.uint8.*255"),
    (dict(images=np.zeros((4, 1, 28, 28), np.uint8)), r"found dtype uint8"),
    (dict(images=[[0.5]]), r"tensor or ndarray .* found list"),
    (dict(labels=[1, 2, 3]), r"field 'labels': .*shape \(4,\), one per image; found \(3,\)"),
    (dict(labels=[0.5, 1.0, 2.0, 3.0]), r"labels must be integers; found dtype float64"),
    (dict(labels=[-1, 0, 1, 2]), r"labels must be >= 0; found -1"),
    (dict(labels=[0, 1, 2, 10]), r"labels must lie in 0..9 \(the model has 10 outputs\); "
                                 r"found 10"),
    (dict(layers=["features.99"]), r"field 'layers': unknown layer 'features.99'; the model's "
                                   r"conv modules are \['features.0', 'features.4', "
                                   r"'features.7'\]"),
    (dict(layers=[]), r"at least one layer name"),
    (dict(layers=["features.0", "features.0"]), r"\['features.0'\] more than once"),
    (dict(batch_size=0), r"field 'batch_size': .*positive integer; found 0"),
    (dict(batch_size=2.5), r"positive integer; found 2.5"),
    (dict(fgsm_epsilon=-0.1), r"field 'fgsm_epsilon': .*>= 0; found -0.1"),
    (dict(fgsm_epsilon=float("nan")), r"finite number >= 0; found nan"),
    (dict(normalize=(0.5,)), r"field 'normalize': normalize must be \(mean, std\)"),
    (dict(normalize=((0.1, 0.2), 0.5)), r"normalize mean must be 1 or 1 finite values; found "
                                        r"\[0.1, 0.2\]"),
    (dict(normalize=(0.5, 0.0)), r"normalize std must be > 0; found \[0.0\]"),
    (dict(sample_ids=[1, 1, 2, 3]), r"sample_ids must be unique"),
    (dict(sample_ids=[1, 2]), r"sample_ids must be \(4,\) integers"),
    (dict(device="gpu0"), r"unknown device 'gpu0'"),
])
def test_invalid_inputs_are_refused(model, suite, overrides, message):
    with pytest.raises(InputError, match=message):
        _call(model, suite, **overrides)


def test_model_must_be_a_module(suite):
    with pytest.raises(InputError, match=r"field 'model': expected a torch.nn.Module, found "
                                         r"function"):
        _call(lambda x: x, suite)


def test_model_without_conv_needs_layers(suite):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.raises(InputError, match=r"no nn.Conv2d module to record by default.*"
                                         r"pass layers="):
        _call(mlp, suite)
    ds = _call(mlp, suite, layers=["1"])
    assert list(ds[dims.LAYER_NAME].values) == ["1"]


def test_model_must_return_logits(suite):
    with pytest.raises(InputError, match=r"logits of shape \(n_inputs, n_classes\); found "
                                         r"\(1, 2, 26, 26\)"):
        _call(nn.Conv2d(1, 2, 3), suite)


def test_layer_running_twice_is_refused(suite):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Linear(28 * 28, 10)

        def forward(self, x):
            return self.head(self.conv(self.conv(x)).flatten(1))

    with pytest.raises(InputError, match=r"layer 'conv' ran more than once in one forward"):
        _call(Twice(), suite)


def test_layer_not_running_is_refused(suite):
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Conv2d(1, 1, 3)
            self.head = nn.Linear(28 * 28, 10)

        def forward(self, x):
            return self.head(x.flatten(1))

    net = Unused()
    with pytest.raises(InputError, match=r"layers \['unused'\] did not run"):
        _call(net, suite, layers=["unused"])


def test_bad_user_transform_output_is_refused(model, suite):
    from ml4ml.probe import transforms

    bad = transforms.Transform("bad", "u", 0.0, lambda images, params: images)
    with pytest.raises(InputError, match=r"transform 'bad' must return \(aug_param, batch, "
                                         r"channel, height, width\) = \(3, 4, 1, 28, 28\); "
                                         r"found \(4, 1, 28, 28\)"):
        _call(model, suite, transform=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(model, suite):
    images, labels = suite
    grid = REFERENCE["scaling"][0]
    cpu = probe_model(model, images, labels, "scaling", grid)
    gpu = probe_model(model, images, labels, "scaling", grid, device="cuda")
    model.to("cpu")
    np.testing.assert_allclose(gpu[dims.PROB].values, cpu[dims.PROB].values, atol=1e-4)
    np.testing.assert_allclose(gpu[dims.ACT].values, cpu[dims.ACT].values, rtol=1e-3, atol=1e-4)
