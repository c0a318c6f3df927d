"""Common corruptions (issue 28.3): identity, growth with severity, references, seeding.

The references are independent: scipy's normal and Poisson quantiles, numpy formulas,
Pillow's BOX resize and JPEG codec, a numpy HSV conversion, scipy's ``zoom`` in CIFAR-10-C's
own ``clipped_zoom``, and a numpy uint32 re-implementation of the documented hash.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy import stats

import docblocks
from ml4ml.data.suites import load_suite
from ml4ml.errors import InputError
from ml4ml.probe import corruptions as C
from ml4ml.probe.corruption_ops import Draws, length_scale
from ml4ml.probe.corruptions_weather import frost_texture
from ml4ml.probe.responses import probe_model
from ml4ml.probe.transforms import get_transform, transform_names, validate_grid

NAMES = C.CORRUPTIONS
ALL = [0, 1, 2, 3, 4, 5]
# families that draw random numbers (the others are deterministic functions of the image)
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform"}


def textures(n: int, size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """CIFAR-like images: smooth random colour fields at 4 and 8 cells plus fine texture."""
    g = torch.Generator().manual_seed(seed)

    def up(t):
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)

    x = (0.55 * up(torch.rand(n, channels, 4, 4, generator=g))
         + 0.3 * up(torch.rand(n, channels, 8, 8, generator=g))
         + 0.15 * torch.rand(n, channels, size, size, generator=g))
    return x.clamp(0.0, 1.0)


@pytest.fixture(scope="module")
def digits():
    return load_suite("digits", n_samples=48).images  # real digits, (48, 1, 28, 28)


@pytest.fixture(scope="module")
def cifar_like():
    return textures(24)


def run(name, images, severities=ALL, ids=None, seed=0):
    ids = torch.arange(len(images)) if ids is None else ids
    return C.corrupt(name, images, severities, sample_ids=ids, seed=seed)


# ---------------------------------------------------------------------------------------
# identity, shapes, sizes


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_the_identity_at_every_size(name):
    for size in (8, 28, 32, 64):
        for channels in (1, 3):
            images = textures(3, size, channels, seed=size + channels)
            out = run(name, images, [0, 5, 0, 2])
            assert out.shape == (4, 3, channels, size, size) and out.dtype == torch.float32
            assert torch.equal(out[0], images) and torch.equal(out[2], images)
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
            assert not torch.equal(out[1], images), (name, size, channels)


@pytest.mark.parametrize("name", NAMES)
def test_works_on_224_pixel_images(name):
    """ImageNet-sized colour images (1 and 3 channels from 8 to 64 pixels: above)."""
    images = textures(1, 224, 3, seed=7)
    out = run(name, images, [0, 5])
    assert out.shape == (2, 1, 3, 224, 224) and torch.equal(out[0], images)
    assert out.min() >= 0 and out.max() <= 1 and (out[1] - images).abs().mean() > 1e-3


def test_non_square_and_float64_images():
    images = textures(2, 40, 3, seed=3)[:, :, :20, :]  # 20 x 40
    for name in NAMES:
        out = run(name, images.double(), [0, 3])
        assert out.dtype == torch.float64 and out.shape == (2, 2, 3, 20, 40), name
        assert torch.equal(out[0], images.double())


# ---------------------------------------------------------------------------------------
# the corruption grows with severity (docs/transforms.md: the distance of each family)


def mean_abs(out, clean):
    return (out - clean).abs().mean(dim=(1, 2, 3, 4))


def smoothed_mean_abs(out, clean, sigma=2.0):
    """Mean |difference| of both images smoothed by a gaussian of ``sigma`` px (9 taps)."""
    taps = torch.exp(-torch.arange(-4, 5.0) ** 2 / (2 * sigma ** 2))
    taps /= taps.sum()

    def smooth(t):
        flat = t.reshape(-1, 1, *t.shape[-2:])
        flat = F.conv2d(F.pad(flat, (4, 4, 0, 0), mode="replicate"), taps.view(1, 1, 1, 9))
        flat = F.conv2d(F.pad(flat, (0, 0, 4, 4), mode="replicate"), taps.view(1, 1, 9, 1))
        return flat.view(t.shape)

    return mean_abs(smooth(out), smooth(clean).unsqueeze(0))


def one_minus_ssim(out, clean):
    """1 - SSIM (gaussian window sigma 1.5, 7 taps, reflect edges, per channel, mean)."""
    taps = torch.exp(-torch.arange(-3, 4.0) ** 2 / (2 * 1.5 ** 2))
    taps /= taps.sum()
    window = (taps[:, None] * taps[None, :]).view(1, 1, 7, 7)
    n_sev = out.shape[0]
    a = out.reshape(-1, 1, *out.shape[-2:])
    b = clean.unsqueeze(0).expand_as(out).reshape(-1, 1, *out.shape[-2:])

    def local(t):
        return F.conv2d(F.pad(t, (3, 3, 3, 3), mode="reflect"), window)

    ma, mb = local(a), local(b)
    va, vb, cov = local(a * a) - ma ** 2, local(b * b) - mb ** 2, local(a * b) - ma * mb
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    return 1 - ssim.view(n_sev, -1).mean(dim=1)


DISTANCE = {"glass_blur": smoothed_mean_abs, "frost": one_minus_ssim}


@pytest.mark.parametrize("name", NAMES)
def test_corruption_grows_with_severity(name, digits, cifar_like):
    distance = DISTANCE.get(name, mean_abs)
    for images in (digits, cifar_like):
        d = distance(run(name, images), images).double()
        assert d[0] == 0 and d[1] > 0, (name, d)
        steps = d[1:] - d[:-1]
        # non-decreasing, up to 0.1% of the largest distance (float rounding of near ties)
        assert (steps >= -1e-3 * d.max()).all(), (name, d.tolist())
        assert d[5] > d[1], (name, d.tolist())


# ---------------------------------------------------------------------------------------
# standard definitions against independent references


def _np_mix32(x):
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _np_bits(ids, seed, name, stream, count):
    """docs/transforms.md's counter hash in numpy uint32 (wrapping) arithmetic."""
    with np.errstate(over="ignore"):
        m = lambda v: int(_np_mix32(np.array([v & 0xFFFFFFFF]))[0])  # noqa: E731
        base = m(m(m(seed & 0xFFFFFFFF) ^ (seed >> 32)) ^ zlib.crc32(name.encode()))
        base = m(base ^ m(stream + 0x9E3779B9))
        low = np.array([i & 0xFFFFFFFF for i in ids], dtype=np.uint32)
        high = np.array([(i >> 32) & 0xFFFFFFFF for i in ids], dtype=np.uint32)
        key = _np_mix32(_np_mix32(low ^ np.uint32(base)) ^ high)
        index = np.arange(count, dtype=np.uint32)
        return _np_mix32(index[None, :] + key[:, None])


def test_counter_random_numbers_match_a_numpy_reimplementation():
    ids = [0, 1, 7, 2 ** 31 + 5, 2 ** 33 + 11]
    draws = Draws(ids, seed=2 ** 40 + 3, name="snow", device="cpu")
    bits = draws.bits((3, 5), 4).numpy().view(np.uint32).reshape(5, 15)
    np.testing.assert_array_equal(bits, _np_bits(ids, 2 ** 40 + 3, "snow", 4, 15))
    u = draws.uniform((3, 5), 4).numpy().reshape(5, 15)
    np.testing.assert_array_equal(u, ((bits >> 9).astype(np.float64) + 0.5) / 2 ** 23)
    rows, elements = torch.tensor([4, 0, 3]), torch.tensor([14, 2, 9])
    np.testing.assert_array_equal(draws.uniform_at(rows, elements, 4).numpy(),
                                  u[rows.numpy(), elements.numpy()])
    # uniform on (0, 1), independent-looking
    many = Draws(np.arange(64), seed=0, name="x", device="cpu").uniform((1000,), 0).numpy()
    assert stats.kstest(many.ravel(), "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(many[:, :-1].ravel(), many[:, 1:].ravel())[0, 1]) < 0.01


def _levels(name, images):
    return [p[C.SEVERITY_PARAMETERS[name][0][0]]
            for p in C.severity_parameters(name, *images.shape[-2:])]


def test_gaussian_noise_is_x_plus_sigma_times_normal_quantile(digits, cifar_like):
    for images in (digits, cifar_like):
        ids = torch.arange(100, 100 + len(images))
        u = Draws(ids, seed=0, name="gaussian_noise", device="cpu").uniform(
            images.shape[1:], 0).double().numpy()
        out = run("gaussian_noise", images, ALL, ids).double().numpy()
        x = images.double().numpy()
        for k, sigma in enumerate(_levels("gaussian_noise", images), start=1):
            ref = np.clip(x + sigma * stats.norm.ppf(u), 0, 1)
            np.testing.assert_allclose(out[k], ref, rtol=0, atol=1e-6)


def test_shot_noise_is_the_poisson_quantile_over_photons(digits, cifar_like):
    for images in (digits, cifar_like):
        ids = torch.arange(len(images))
        u = Draws(ids, seed=0, name="shot_noise", device="cpu").uniform(
            images.shape[1:], 0).double().numpy()
        out = run("shot_noise", images).double().numpy()
        x = images.double().numpy()
        for k, photons in enumerate(_levels("shot_noise", images), start=1):
            ref = np.clip(stats.poisson.ppf(u, x * photons) / photons, 0, 1)
            np.testing.assert_allclose(out[k], ref, rtol=0, atol=1e-6)


def test_poisson_quantile_equals_scipy_over_the_whole_range():
    g = torch.Generator().manual_seed(1)
    u = (torch.randint(0, 2 ** 23, (60_000,), generator=g).double() + 0.5) / 2 ** 23
    rates = torch.cat([torch.zeros(10), torch.rand(30_000, generator=g) * 12,
                       torch.rand(29_990, generator=g) * 600]).double()
    np.testing.assert_array_equal(C.poisson_quantile(u, rates).numpy(),
                                  stats.poisson.ppf(u.numpy(), rates.numpy()))


def test_impulse_noise_is_salt_and_pepper(digits, cifar_like):
    for images in (digits, cifar_like):
        ids = torch.arange(len(images))
        draws = Draws(ids, seed=0, name="impulse_noise", device="cpu")
        u = draws.uniform(images.shape[1:], 0).numpy()
        salt = (draws.uniform(images.shape[1:], 1).numpy() < 0.5).astype(np.float32)
        out = run("impulse_noise", images).numpy()
        for k, amount in enumerate(_levels("impulse_noise", images), start=1):
            np.testing.assert_array_equal(out[k], np.where(u < amount, salt, images.numpy()))


def _np_rgb2hsv(rgb):
    """skimage.color.rgb2hsv in numpy: (..., 3) in [0, 1]."""
    v = rgb.max(-1)
    delta = rgb.max(-1) - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / v)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        h = np.zeros_like(v)
        h = np.where(r == v, (g - b) / delta, h)
        h = np.where(g == v, 2.0 + (b - r) / delta, h)
        h = np.where(b == v, 4.0 + (r - g) / delta, h)
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], -1)


def _np_hsv2rgb(hsv):
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.astype(int) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(hi, [c[i] for c in choices]) for i in range(3)], -1)


def test_brightness_shifts_the_hsv_value(digits, cifar_like):
    for images in (digits, cifar_like):
        out = run("brightness", images).double().numpy()
        x = images.double().numpy()
        for k, shift in enumerate(_levels("brightness", images), start=1):
            if x.shape[1] == 1:
                ref = np.clip(x + shift, 0, 1)
            else:
                hsv = _np_rgb2hsv(x.transpose(0, 2, 3, 1))
                hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
                ref = np.clip(_np_hsv2rgb(hsv), 0, 1).transpose(0, 3, 1, 2)
            np.testing.assert_allclose(out[k], ref, rtol=0, atol=1e-6)


def test_contrast_scales_about_each_channels_mean(digits, cifar_like):
    for images in (digits, cifar_like):
        out = run("contrast", images).double().numpy()
        x = images.double().numpy()
        means = x.mean(axis=(2, 3), keepdims=True)
        for k, factor in enumerate(_levels("contrast", images), start=1):
            np.testing.assert_allclose(out[k], np.clip((x - means) * factor + means, 0, 1),
                                       rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 20, 28),
                                   (1, 8, 8)])
def test_pixelate_equals_pillow_box_down_and_up(shape):
    images = textures(3, shape[2], shape[0], seed=5)[:, :, :shape[1], :]
    out = run("pixelate", images).numpy()
    channels, height, width = shape
    scale = length_scale(height, width)
    for k, factor in enumerate(_levels("pixelate", images), start=1):
        small = (max(1, int(width / scale * factor)), max(1, int(height / scale * factor)))
        for i in range(len(images)):
            for c in range(channels):
                im = Image.fromarray(images[i, c].numpy().astype(np.float32))
                ref = np.asarray(im.resize(small, Image.Resampling.BOX)
                                 .resize((width, height), Image.Resampling.BOX))
                np.testing.assert_allclose(out[k, i, c], ref, rtol=0, atol=1e-6)
    if shape == (3, 64, 64):  # blocks twice as large as at 32 pixels: 30, ..., 20 of them
        assert C.severity_parameters("pixelate", 64, 64)[4]["factor"] == 0.65
        assert int(64 / scale * 0.65) == 20


def _pillow_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (1, 13, 21), (3, 32, 32)])
def test_jpeg_equals_pillows_round_trip(shape, digits):
    channels, height, width = shape
    if shape == (1, 28, 28):
        images = digits[:40]  # several tiles in the grey mosaic
    else:
        images = textures(10, max(height, width), channels, seed=11)[:, :, :height, :width]
    out = run("jpeg_compression", images).numpy()
    pixels = np.round(images.numpy() * 255).astype(np.uint8)
    for k, quality in enumerate(_levels("jpeg_compression", images), start=1):
        for i in range(len(images)):
            image = pixels[i, 0] if channels == 1 else pixels[i].transpose(1, 2, 0)
            ref = _pillow_jpeg(image, int(quality)).astype(np.float32) / 255
            mine = out[k, i, 0] if channels == 1 else out[k, i].transpose(1, 2, 0)
            np.testing.assert_array_equal(mine, ref)


def test_zoom_blur_equals_cifar_10_c_with_scipy_zoom(cifar_like):
    def clipped_zoom(img, zoom_factor):  # CIFAR-10-C's, with scipy
        h = img.shape[0]
        ch = int(np.ceil(h / zoom_factor))
        top = (h - ch) // 2
        img = scipy.ndimage.zoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1),
                                 order=1)
        trim_top = (img.shape[0] - h) // 2
        return img[trim_top:trim_top + h, trim_top:trim_top + h]

    images = cifar_like[:4]
    out = run("zoom_blur", images).numpy()
    for k, stop in enumerate(_levels("zoom_blur", images), start=1):
        zooms = np.arange(1, stop, 0.01)
        for i in range(len(images)):
            x = images[i].numpy().transpose(1, 2, 0)
            ref = (x + sum(clipped_zoom(x, z) for z in zooms)) / (len(zooms) + 1)
            np.testing.assert_allclose(out[k, i].transpose(1, 2, 0), np.clip(ref, 0, 1),
                                       rtol=0, atol=1e-6)


def test_common_random_numbers_across_severities(digits):
    out = run("gaussian_noise", digits).double()
    noise = [(out[k] - digits) / s for k, s in enumerate(_levels("gaussian_noise", digits), 1)]
    inside = (out[1:] > 0).all(0) & (out[1:] < 1).all(0)  # unclipped at every severity
    for k in range(1, 5):
        torch.testing.assert_close(noise[k][inside], noise[0][inside], rtol=0, atol=1e-5)
    flipped = [(o != digits) for o in run("impulse_noise", digits)[1:]]
    for low, high in zip(flipped, flipped[1:]):  # the flipped pixels of k are flipped at k + 1
        assert (high | ~low).all()


# ---------------------------------------------------------------------------------------
# seeding: reruns, batch composition, severity subsets, seeds, sample ids


@pytest.mark.parametrize("name", NAMES)
def test_images_depend_only_on_seed_sample_and_severity(name, digits, cifar_like):
    for images in (digits[:12], cifar_like[:12]):
        ids = torch.arange(500, 512)
        full = run(name, images, ALL, ids)
        assert torch.equal(full, run(name, images, ALL, ids))  # a rerun
        pick = torch.tensor([9, 2, 11, 0, 5])  # another batch, other order, other severities
        part = run(name, images[pick], [5, 0, 2], ids[pick])
        assert torch.equal(part, full[[5, 0, 2]][:, pick])
        assert torch.equal(run(name, images[7:8], [3], ids[7:8])[0, 0], full[3, 7])
        other_seed = run(name, images, [4], ids, seed=1)[0]
        other_ids = run(name, images, [4], ids + 1000)[0]
        if name in RANDOM:
            assert not torch.equal(other_seed, full[4]) and not torch.equal(other_ids, full[4])
        else:
            assert torch.equal(other_seed, full[4]) and torch.equal(other_ids, full[4])


def test_frost_texture_is_seeded_and_in_range():
    a, b = frost_texture(0, 1.0), frost_texture(1, 1.0)
    assert a.shape == (128, 128) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert 0.2 < float(a.mean()) < 0.8 and not torch.equal(a, b)
    assert torch.equal(a, frost_texture.__wrapped__(0, 1.0))
    assert frost_texture(0, 2.0).shape == (256, 256)


# ---------------------------------------------------------------------------------------
# errors, registry, probe


def test_unknown_corruption_lists_the_names():
    with pytest.raises(InputError, match=r"unknown corruption 'rain'; expected one of "
                                         r"\['gaussian_noise', 'shot_noise'.*'jpeg_compression'\]"):
        run("rain", textures(1))


@pytest.mark.parametrize("bad", [7, 2.5, -1, float("nan")])
def test_severities_outside_0_to_5_are_refused(bad):
    with pytest.raises(InputError, match=r"gaussian_noise severities must be integers from 0 to "
                                         r"5; found " + ("nan" if bad != bad else f"{bad:g}")):
        run("gaussian_noise", textures(1), [0, bad])
    family = get_transform("gaussian_noise")
    with pytest.raises(InputError, match=r"gaussian_noise severity must be a whole number from "
                                         r"0 to 5; found|non-finite"):
        validate_grid(family, [0, 1, bad])


def test_bad_images_and_missing_sample_ids_are_refused():
    with pytest.raises(InputError, match="sample ids"):
        C.corrupt("snow", textures(2), [0, 1], sample_ids=None)
    with pytest.raises(InputError, match=r"sample_ids must be \(2,\) integers"):
        C.corrupt("snow", textures(2), [0, 1], sample_ids=[0, 1, 2])
    with pytest.raises(InputError, match="needs 1 or 3 channels; found 2"):
        run("fog", torch.rand(1, 2, 8, 8))
    with pytest.raises(InputError, match="sample ids"):
        get_transform("snow")(textures(2), torch.tensor([0.0, 1.0]))


def test_one_sided_grids_of_the_registered_families():
    for name in NAMES:
        family = get_transform(C.FAMILY_NAMES[name])
        assert family.name in transform_names()
        assert (family.units, family.identity, family.identity_at) == ("severity", 0.0, "start")
        assert family.integer and family.needs_sample_ids and family.maximum == 5
    # the multiplicative families keep their names and centred grids
    assert get_transform("brightness").identity == 1.0
    assert get_transform("contrast").identity_at == "centre"
    grid = validate_grid("fog", [0, 1, 2, 3, 4, 5])
    assert grid.dtype == np.float64 and grid.tolist() == [0, 1, 2, 3, 4, 5]
    assert validate_grid("fog", [0]).tolist() == [0.0]
    assert validate_grid("fog", np.linspace(0, 5, 6)).tolist() == [0, 1, 2, 3, 4, 5]
    for params, message in [([1, 2, 3], r"identity \(0 severity\) first; found 1 first"),
                            ([0, 2, 1], r"found 2 followed by 1"),
                            ([], r"found 0 values"),
                            ([0, 3, 6], r"fog severity must be a whole number from 0 to 5; "
                                        r"found 6")]:
        with pytest.raises(InputError, match=message):
            validate_grid("fog", params)
    images, ids = textures(3, 16), torch.tensor([4, 9, 2])
    params = torch.tensor([0.0, 2.0, 5.0], dtype=torch.float64)
    assert torch.equal(get_transform("brightness_corruption")(images, params, sample_ids=ids),
                       C.corrupt("brightness", images, [0, 2, 5], sample_ids=ids))


def test_probe_model_seeds_corruptions_by_sample_id(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 24 * 24, 10))
    images, labels = digits[:6], torch.arange(6) % 10
    ids = np.arange(30, 36)
    probe = probe_model(model, images, labels, "snow", [0, 2, 5], sample_ids=ids, batch_size=4)
    with torch.inference_mode():
        expected = torch.softmax(model(C.corrupt("snow", images, [0, 2, 5], sample_ids=ids)
                                       .reshape(-1, 1, 28, 28)), dim=1).view(3, 6, 10)
    np.testing.assert_allclose(probe["prob"].values, expected.numpy(), rtol=0, atol=1e-6)
    part = probe_model(model, images[3:5], labels[3:5], "snow", [0, 2, 5], sample_ids=ids[3:5])
    np.testing.assert_allclose(part["prob"].values, probe["prob"].values[:, 3:5], rtol=0,
                               atol=1e-6)


def test_the_documented_example_runs():
    (block,) = docblocks.marked("test_corruptions.py::test_the_documented_example_runs")
    namespace = {}
    exec(compile(block.code, "docs/transforms.md", "exec"), namespace)
    assert namespace["out"].shape == (6, 8, 3, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_gives_the_cpus_images(name, digits):
    """On the device: the same random bits, so the same images up to float rounding; a
    discrete family (a Poisson count, a salt-or-pepper choice, a shuffled pixel) may flip
    at a rounding tie, in at most 1 element in 10,000."""
    for images in (digits[:16], textures(8, 64)):
        ids = torch.arange(len(images))
        cpu = C.corrupt(name, images, ALL, sample_ids=ids)
        gpu = C.corrupt(name, images.cuda(), ALL, sample_ids=ids.cuda())
        assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
        off = (gpu.cpu() - cpu).abs() > 1e-5
        assert off.float().mean() <= 1e-4, (name, off.float().mean().item())
