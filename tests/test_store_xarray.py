"""The demo store as plain xarray users expect it: every dimension selects by keyword, one
name per layer everywhere, units on variables, and Dataset.where / to_dataframe / groupby /
plot work on every group (issue 17, points 1-3)."""

import inspect
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from ml4ml import dims
from ml4ml.cli import cli

matplotlib.use("Agg")

GROUPS = ("models", "probes/digits/rotation", "matrices/digits/rotation",
          "measures/digits/rotation", "labels/rotation", "assess/rotation")


def _keywords() -> set:
    """Every argument name of the xarray methods users call with dims as keywords."""
    names = set()
    for cls in (xr.Dataset, xr.DataArray):
        for method in ("sel", "isel", "interp", "where", "reduce"):
            names |= set(inspect.signature(getattr(cls, method)).parameters) - {"self"}
    return names


@pytest.fixture(scope="module")
def store(demo_run):
    return demo_run[0] / "demo.zarr"


def test_the_keywords_cover_the_known_clashes():
    assert {"method", "tolerance", "drop", "indexers", "other", "cond", "dim", "func",
            "axis", "keep_attrs", "missing_dims", "assume_sorted"} <= _keywords()


@pytest.mark.parametrize("group", GROUPS)
def test_every_dimension_selects_by_keyword_and_no_name_collides(store, group):
    ds = xr.open_zarr(store, group=group)
    clashes = sorted(set(ds.variables) & _keywords())
    assert clashes == [], f"{group}: {clashes} are arguments of xarray's methods"
    for dim in ds.dims:
        if dim not in ds.indexes or ds.sizes[dim] < 2:
            continue
        first = ds[dim].values[0]
        picked = ds.sel(**{dim: first})
        assert dim not in picked.dims, (group, dim)  # one label: the dim is gone
        assert picked[dim].values == first, (group, dim)
        assert ds.sel(**{dim: [first]}).sizes[dim] == 1, (group, dim)


def test_estimator_selects_one_method_and_keeps_its_kind(store):
    ds = xr.open_zarr(store, group="assess/rotation").load()
    assert "method" not in ds.variables and "estimator" in ds.dims
    assert ds["method_kind"].dims == ("estimator",)
    forest = ds["accuracy"].sel(estimator="random_forest")
    assert forest.dims == ("repeat", "fold")
    k = ds["estimator"].values.tolist().index("random_forest")
    np.testing.assert_array_equal(forest.values, ds["accuracy"].values[:, :, k])
    assert ds["importance"].sel(estimator="random_forest").dims == ("feature",)


def test_one_name_per_layer_in_the_store_the_features_the_report_and_the_assessors(
        store, demo_run):
    folder = demo_run[0]
    measures = xr.open_zarr(store, group="measures/digits/rotation")
    matrices = xr.open_zarr(store, group="matrices/digits/rotation")
    levels = measures["level"].values.tolist()
    assert levels == matrices["level"].values.tolist()
    names = np.asarray(measures["layer_name"].values)
    assert (names == names[0]).all() and names[0].tolist() == ["conv2", "conv3"]
    # levels by position from the output, the same for any architecture
    assert levels == dims.level_names(2)
    assert levels[:3] == ["confidence", "layer-2_mean", "layer-2_std"]
    assert levels[-1] == "layer-1_max_std"
    assert measures["value"].sel(level="layer-1_max").sizes["measure"] > 0
    # by module name, where every model recorded the same module: here all (CNN5s)
    modules = measures["level_module"].values.tolist()
    assert modules == matrices["level_module"].values.tolist()
    assert modules[:3] == ["confidence", "conv2_mean", "conv2_std"]
    assert modules[-1] == "conv3_max_std"
    by_module = measures.set_xindex("level_module").sel(level_module="conv3_max")
    np.testing.assert_array_equal(by_module["value"].values,
                                  measures["value"].sel(level="layer-1_max").values)
    # the features CSV: every column is <level>_<measure>
    columns = pd.read_csv(folder / "demo.zarr.rotation.paper80.csv").columns[1:]
    measure_names = measures["measure"].values.tolist()
    stems = {c for c in columns for m in measure_names if c == f"{c[:-len(m) - 1]}_{m}"
             and c.endswith(f"_{m}") and c[:-len(m) - 1] in levels}
    assert stems == set(columns)
    used = {c[:-len(m) - 1] for c in columns for m in measure_names
            if c.endswith(f"_{m}") and c[:-len(m) - 1] in levels}
    assert used == {"confidence", "layer-2_max", "layer-2_max_mean", "layer-1_max",
                    "layer-1_max_mean"}
    # the assessors' features are the CSV's columns (and robust accuracy)
    assess = xr.open_zarr(store, group="assess/rotation")
    assert set(assess["feature"].values.tolist()) - {"robust_accuracy"} == set(columns)
    # the report's and the labelling page's strip titles: each level, its module beside it
    from ml4ml.report.stage import _matrices

    _, _, titles, _, _ = _matrices(store, "digits", "rotation", "all")
    assert titles == ["confidence", "layer-2_max (conv2)", "layer-2_max_mean (conv2)",
                      "layer-1_max (conv3)", "layer-1_max_mean (conv3)"]
    # --level takes the levels, and the module names where they are every model's
    for level in ("layer-1_max", "conv3_max"):
        out = folder / f"{level}.csv"
        result = CliRunner().invoke(cli, ["features", str(store), "--transform", "rotation",
                                          "--level", level, "--measure", "mean", "-o",
                                          str(out)])
        assert result.exit_code == 0, result.output
        assert list(pd.read_csv(out).columns) == ["mid", "layer-1_max_mean"]


@pytest.mark.parametrize("group", GROUPS[1:4])
def test_units_live_on_variables_and_are_true(store, group):
    ds = xr.open_zarr(store, group=group)
    assert "units" not in ds.attrs
    for axis in ("aug_param", "aug_param_i", "aug_param_j"):
        if axis in ds.variables:
            assert ds[axis].attrs["units"] == "degrees"
    if "half_width" in ds.variables:
        assert ds["half_width"].attrs["units"] == "grid steps"
        assert ds["half_width"].values[0] == ds.sizes["aug_param"] // 2 == 15  # 31 angles


def _string_vars(ds):
    return [name for name, var in ds.variables.items() if var.dtype.kind in "OUST"]


@pytest.mark.parametrize("group", GROUPS)
def test_plain_xarray_works_on_every_group(store, group):
    import matplotlib.pyplot as plt

    lazy = xr.open_zarr(store, group=group)
    assert all(lazy[n].dtype.kind == "U" for n in _string_vars(lazy)), group
    ds = lazy.load()
    dim = max(ds.dims, key=lambda d: (d == "mid", ds.sizes[d]))
    cond = xr.DataArray(np.arange(ds.sizes[dim]) % 2 == 0, dims=dim,
                        coords={dim: ds[dim]} if dim in ds.indexes else None)
    kept = ds.where(cond, drop=True)
    assert kept.sizes[dim] == (ds.sizes[dim] + 1) // 2
    lazy_kept = lazy.where(cond, drop=True)
    assert lazy_kept.sizes[dim] == kept.sizes[dim]
    one = [n for n, v in ds.data_vars.items() if v.dims == (dim,)]
    if one:
        frame = ds[one].to_dataframe()
        assert len(frame) == ds.sizes[dim]
    # every variable, with the others of the same dims (a frame of unrelated dims is their
    # cross product, by xarray's design)
    by_dims = {}
    for n, v in ds.data_vars.items():
        by_dims.setdefault(v.dims, []).append(n)
    for shared, names in by_dims.items():
        if not shared:  # scalars (a 0-d frame has no index): one row of a Series
            assert set(ds[names].to_pandas().index) == set(names)
            continue
        frame = ds[names].to_dataframe()
        assert len(frame) == np.prod([ds.sizes[d] for d in shared])
        assert set(names) <= set(frame.columns)
    numeric = [n for n, v in ds.data_vars.items() if v.dtype.kind in "fi" and dim in v.dims
               and v.ndim <= 3]
    if numeric:
        name = numeric[0]
        key = xr.DataArray(np.arange(ds.sizes[dim]) % 2, dims=dim, name="parity")
        grouped = ds[name].groupby(key).mean(...)
        assert grouped.sizes["parity"] == 2
        plt.figure()
        ds[name].isel({d: 0 for d in ds[name].dims[1:]}).plot()
        plt.close("all")


def test_the_users_where_on_the_models_table(store):
    models = xr.open_zarr(store, group="models").load()
    kept = models.where(models.aug_range == 45, drop=True)
    assert kept.sizes["mid"] == int((models.aug_range == 45).sum())
    assert set(kept["arch"].values.tolist()) == {"cnn5"}


@pytest.mark.parametrize("old_names", ["conv2", "layer0"])
def test_an_old_layout_store_gets_one_line_saying_how_to_upgrade(store, tmp_path, old_names):
    """An assess group with the old dim 'method' and levels named after modules (conv2_mean,
    the previous version) or layer<i> (the one before): store check names each and the
    command that upgrades it; measure, features and the report refuse the old groups."""
    old = tmp_path / "old.zarr"
    shutil.copytree(store, old)
    from ml4ml.store import writing
    from ml4ml.store.groups import read_group, replace_group, zarr_group

    renamed = {"conv2": {"layer-2": "conv2", "layer-1": "conv3"},
               "layer0": {"layer-2": "layer0", "layer-1": "layer1"}}[old_names]
    with writing(old, "test"):
        ds = read_group(old, "assess/rotation").rename({"estimator": "method"})
        replace_group(old, "assess/rotation", ds)
        for group in ("matrices/digits/rotation", "measures/digits/rotation"):
            level = zarr_group(old, group)["level"]
            values = level[:].tolist()
            for new, before in renamed.items():
                values = [v.replace(new, before) for v in values]
            level[:] = np.asarray(values, dtype=level.dtype)
    from ml4ml.store import commit

    with writing(old, "test"):
        for group in ("matrices/digits/rotation", "measures/digits/rotation"):
            commit(old, group)
    result = CliRunner().invoke(cli, ["store", "check", str(old)])
    assert result.exit_code == 1
    assert ("assess/rotation: dim 'method' is the old name of 'estimator' -> run 'ml4ml "
            f"assess {old} --transform rotation' to rewrite it") in result.output
    assert (f"measures/digits/rotation: levels named {old_names}_mean, ... (an earlier "
            "ml4ml's naming; now by position from the output: layer-2_mean, ..., "
            f"layer-1_max_std) -> run 'ml4ml measure {old} --force' to measure every model "
            f"again, then 'ml4ml assess {old} --transform rotation' (its features "
            "are named after the levels)") in result.output
    report = CliRunner().invoke(cli, ["report", str(old), "-o", str(tmp_path / "r")])
    assert report.exit_code == 1 and report.output.count("\n") == 1
    assert "store check" in report.output
    for command in (["measure", str(old)],
                    ["features", str(old), "--transform", "rotation", "-o",
                     str(tmp_path / "f.csv")]):
        refused = CliRunner().invoke(cli, command)
        assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
        assert (f"'matrices/digits/rotation' names its levels {old_names}_mean, ... (an "
                "earlier ml4ml's naming); levels are now named by position from the output, "
                "layer-2_mean, ..., layer-1_max_std") in refused.output
        assert f"run 'ml4ml store check {old}' to see how to upgrade it" in refused.output
    # the mend: measure --force rewrites both groups; store check then names the assess
    # group alone
    mended = CliRunner().invoke(cli, ["measure", str(old), "--force", "-q"])
    assert mended.exit_code == 0, mended.output
    after = CliRunner().invoke(cli, ["store", "check", str(old)])
    assert "levels" not in after.output and "assess/rotation: dim 'method'" in after.output


def test_a_string_longer_than_its_array_is_refused_and_an_error_text_is_cut():
    from ml4ml.errors import StoreError
    from ml4ml.store.arrays import fit, string_width, zarr_dtype

    assert zarr_dtype(object, "mid", ["m001"]) == np.dtype("<U256")
    assert zarr_dtype(object, "arch", ["x" * 300]) == np.dtype("<U300")
    assert string_width("error") == 2048
    four = np.empty(0, dtype="<U4")
    assert fit(four, ["ab", None], "arch").tolist() == ["ab", ""]
    with pytest.raises(StoreError, match="'abcdef'... has 6 characters; the array holds at "
                                         "most 4"):
        fit(four, ["abcdef"], "arch")
    assert fit(four, ["abcdef"], "error").tolist() == ["abc…"]
