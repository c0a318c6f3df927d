"""Corruption families in a spec (issue 28.3/28.6): validate, probe, measure, errors.

A tiny CNN5 store is trained once; its corruption probes are compared with a plain torch
loop over ``corrupt``'s images (the same images for every model, bitwise on a rerun), and
the measure stage runs on the one-sided severity grids mirrored about the identity.
"""

import docblocks
import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from tree import digest as tree_digest

from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.config import load_pipeline
from ml4ml.probe.corruptions import corrupt
from ml4ml.probe.stage import load_probe_suite
from ml4ml.zoo.training import load_checkpoint

SPEC = """
name = "tiny-corruptions"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 24
[transforms.snow]
values = [0, 1, 2, 3, 4, 5]
[transforms.jpeg_compression]
grid = [0, 5, 6]
[transforms.brightness_corruption]
values = [0, 2, 4]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 150
augmentation = "rotation"
[[zoo.grids]]
aug_range = [0, 30]
"""


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corruptions")
    spec = folder / "tiny.toml"
    spec.write_text(SPEC)
    for stage in ("train", "probe"):
        result = run(stage, spec, "-q")
        assert result.exit_code == 0, result.output
    return spec


def test_validate_names_the_severity_grids(probed):
    result = run("validate", probed)
    assert result.exit_code == 0, result.output
    assert ("snow (6 values 0..5), jpeg_compression (6 values 0..5), brightness_corruption "
            "(3 values 0..4)") in result.output


def _expected_prob(model, recipe, images, name, severities):
    """softmax(model(normalize(corrupt(images)))) in one plain torch loop per severity."""
    corrupted = corrupt(name, images, severities, sample_ids=torch.arange(len(images)))
    out = []
    with torch.inference_mode():
        for stack in corrupted:
            if recipe.normalize is not None:
                mean, std = (torch.tensor(v, dtype=stack.dtype).view(1, -1, 1, 1)
                             for v in recipe.normalize)
                stack = (stack - mean) / std
            out.append(torch.softmax(model(stack).double(), dim=1).numpy())
    return np.stack(out)


@pytest.mark.parametrize("name,severities", [("snow", [0, 1, 2, 3, 4, 5]),
                                             ("jpeg_compression", [0, 1, 2, 3, 4, 5]),
                                             ("brightness_corruption", [0, 2, 4])])
def test_probes_equal_a_plain_loop_over_the_corrupted_images(probed, name, severities):
    pipeline = load_pipeline(probed)
    suite = load_probe_suite(pipeline, pipeline.suites[0])
    stored = store.open_probes(pipeline.store, "digits", name)
    assert stored[dims.AUG_PARAM].values.tolist() == severities
    assert stored[dims.AUG_PARAM].attrs["identity_at"] == "start"
    assert stored[dims.AUG_PARAM].attrs["units"] == "severity"
    table = store.read_models(pipeline.store)
    family = {"brightness_corruption": "brightness"}.get(name, name)
    for mid in ("m001", "m002"):  # two models, the same corrupted images
        model, recipe = load_checkpoint(str(table.checkpoint.sel(mid=mid).values))
        model.eval()
        expected = _expected_prob(model, recipe, suite.images, family, severities)
        np.testing.assert_allclose(stored[dims.PROB].sel({dims.MID: mid}).values, expected,
                                   rtol=0, atol=1e-6, err_msg=mid)
    # severity 0 is the clean suite: the same responses as the identity of every family
    clean = store.open_probes(pipeline.store, "digits", "snow")[dims.PROB].isel(
        {dims.AUG_PARAM: 0}).values
    np.testing.assert_array_equal(stored[dims.PROB].isel({dims.AUG_PARAM: 0}).values, clean)


def test_a_forced_rerun_is_bitwise_the_same(probed):
    pipeline = load_pipeline(probed)
    before = {name: store.open_probes(pipeline.store, "digits", name)[dims.PROB].values
              for name in pipeline.transforms}
    result = run("probe", probed, "--force", "-q")
    assert result.exit_code == 0, result.output
    for name, values in before.items():
        again = store.open_probes(pipeline.store, "digits", name)[dims.PROB].values
        assert again.tobytes() == values.tobytes(), name


def test_measure_runs_on_the_mirrored_severity_grid(probed):
    pipeline = load_pipeline(probed)
    result = run("measure", pipeline.store, "-q")
    assert result.exit_code == 0, result.output
    assert "digits/snow: measured 2 model(s)" in result.output
    measures = xr.open_zarr(pipeline.store, group="measures/digits/snow")
    assert measures[dims.AUG_PARAM].values.tolist() == [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5]
    probes = store.open_probes(pipeline.store, "digits", "snow")
    correct = (probes[dims.PREDICTION] == probes[dims.LABEL]).mean(dims.SAMPLE).values
    mirror = [5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(measures["accuracy"].values, correct[:, mirror], rtol=0,
                               atol=1e-12)
    matrices = xr.open_zarr(pipeline.store, group="matrices/digits/snow")
    m = matrices[dims.MATRIX].sel(level="confidence", split="all", kind="l2").values
    # the mirrored matrix: entry (-s, t) is entry (s, t), so rows -s and s are equal
    np.testing.assert_array_equal(m[:, 0], m[:, -1])
    np.testing.assert_array_equal(m[:, 5 - 2], m[:, 5 + 2])
    assert np.isfinite(measures["value"].sel(level="confidence", split="all").values).any()


@pytest.mark.parametrize("values,message", [
    ("[0, 1, 7]", "snow severity must be a whole number from 0 to 5; found 7"),
    ("[0, 2.5]", "snow severity must be a whole number from 0 to 5; found 2.5"),
    ("[-1, 0, 1]", "snow severity must be a whole number from 0 to 5; found -1"),
    ("[1, 2, 3]", "identity (0 severity) first; found 1 first"),
])
def test_bad_severities_are_refused_before_anything_is_written(tmp_path, values, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace("values = [0, 1, 2, 3, 4, 5]", f"values = {values}"))
    for command in (["validate"], ["train", "-q"], ["run", "-q"]):
        result = run(command[0], spec, *command[1:])
        assert result.exit_code == 1, (command, result.output)
        assert "field 'transforms.snow.values'" in result.output, result.output
        assert message in result.output and str(spec) in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "db.zarr").exists()


def test_an_unknown_corruption_lists_the_names(tmp_path):
    spec = tmp_path / "rain.toml"
    spec.write_text(SPEC.replace("[transforms.snow]", "[transforms.rain]"))
    result = run("validate", spec)
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if "rain" in x)
    assert "field 'transforms.rain'" in line and "unknown transform 'rain'" in line
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                 "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness_corruption",
                 "contrast_corruption", "elastic_transform", "pixelate", "jpeg_compression"):
        assert name in line, name


def test_probe_refuses_a_bad_severity_and_leaves_the_store_untouched(probed, tmp_path):
    pipeline = load_pipeline(probed)
    before = tree_digest(pipeline.store)
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace('path = "db.zarr"', f'path = "{pipeline.store}"')
                    .replace("values = [0, 2, 4]", "values = [0, 2, 6]"))
    result = run("probe", spec, "-q")
    assert result.exit_code == 1
    assert "brightness_corruption severity must be a whole number from 0 to 5; found 6" \
        in result.output
    assert tree_digest(pipeline.store) == before


def test_the_documented_spec_tables_validate(tmp_path):
    (block,) = docblocks.marked("test_corruption_stage.py::test_the_documented_spec_tables_validate")
    head, zoo = SPEC.split("[transforms.snow]")[0], SPEC[SPEC.index("[zoo]"):]
    spec = tmp_path / "documented.toml"
    spec.write_text(head + block.code + zoo)
    result = run("validate", spec)
    assert result.exit_code == 0, result.output
    assert ("gaussian_noise (6 values 0..5), jpeg_compression (6 values 0..5), "
            "brightness_corruption (3 values 0..4)") in result.output
    assert not (tmp_path / "db.zarr").exists()
