"""Per-channel units (issue 27.3): ``probe_model(..., units="channel")``, the probes'
``unit`` array in a store mixing layer widths and modules, ``unit_values`` /
``channel_levels``, and nv per channel against tmeasures 1.2.11's ``AverageFeatureMaps``
run on the full feature maps."""

from __future__ import annotations

import warnings

import dask
import numpy as np
import pytest
import torch
import torch.nn as nn
import xarray as xr

from ml4ml import dims, store
from ml4ml.errors import InputError
from ml4ml.measure.responses import response_measures
from ml4ml.measure.units import channel_levels, unit_values
from ml4ml.probe import responses as probe_responses
from ml4ml.probe.responses import probe_model
from ml4ml.probe.stage import probe_template
from ml4ml.probe.transforms import get_transform
from ml4ml.zoo.architectures import build_model

GRID = [-20.0, -10.0, 0.0, 10.0, 20.0]


class TwoConvs(nn.Module):
    """Convolutions of ``widths`` channels (named ``names``), then a linear classifier."""

    def __init__(self, widths=(20, 5), names=("a", "b")):
        super().__init__()
        self.names = names
        setattr(self, names[0], nn.Conv2d(1, widths[0], 3))
        setattr(self, names[1], nn.Conv2d(widths[0], widths[1], 3))
        self.fc = nn.Linear(widths[1], 10)

    def forward(self, x):
        first = getattr(self, self.names[0])(x)
        return self.fc(getattr(self, self.names[1])(torch.relu(first)).mean((2, 3)))


def images(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 28, 28), generator=g), torch.arange(n) % 10


def feature_maps(model, layer_names, x, grid):
    """{layer: (P, S, C, H, W)} float32 outputs, by forward hooks, independently of ml4ml's
    recorder (the same transform applied to the same images)."""
    modules = dict(model.named_modules())
    out = {name: [] for name in layer_names}
    handles = [modules[name].register_forward_hook(
        lambda module, i, o, name=name: out[name].append(o.detach().clone()))
        for name in layer_names]
    model.eval()
    with torch.inference_mode():
        stack = get_transform("rotation").apply(x, torch.tensor(grid, dtype=torch.float64))
        for k in range(len(grid)):
            model(stack[k].float())
    for handle in handles:
        handle.remove()
    return {name: torch.stack(maps) for name, maps in out.items()}


@pytest.mark.parametrize("held", [True, False])
def test_probe_units_are_every_channels_spatial_mean(monkeypatch, held):
    torch.manual_seed(0)
    model = build_model("cnn5", in_channels=1, num_classes=10, image_size=28)
    if not held:  # every layer reduced per forward (the large-layer path)
        monkeypatch.setattr(probe_responses, "HELD_LAYER_BYTES", 0)
    x, y = images()
    ds = probe_model(model, x, y, "rotation", GRID, units="channel", batch_size=16)
    names = [str(n) for n in ds[dims.LAYER_NAME].values]
    maps = feature_maps(model, names, x, GRID)
    expected = np.concatenate([maps[n].mean(dim=(3, 4)).numpy() for n in names], axis=-1)
    assert ds[dims.UNIT_RESPONSE].dims == (dims.AUG_PARAM, dims.SAMPLE, dims.UNIT)
    assert ds[dims.UNIT_RESPONSE].dtype == np.float32
    np.testing.assert_allclose(ds[dims.UNIT_RESPONSE].values, expected, rtol=1e-5, atol=1e-6)
    # tmeasures' per-feature-map tv and sv (AverageFeatureMaps), by numpy on the maps
    full = {n: maps[n].double().flatten(3).numpy() for n in names}  # (P, S, C, HW)
    tv = np.concatenate([m.std(axis=0, ddof=1).mean(axis=(0, 2)) for m in full.values()])
    sv = np.concatenate([m.std(axis=1, ddof=1).mean(axis=(0, 2)) for m in full.values()])
    np.testing.assert_allclose(ds[dims.UNIT_TV].values, tv, rtol=1e-9)
    np.testing.assert_allclose(ds[dims.UNIT_SV].values, sv, rtol=1e-9)
    widths = [maps[n].shape[2] for n in names]
    assert list(ds[dims.UNIT_LABEL].values) == dims.unit_labels(widths)
    assert list(ds[dims.UNIT_LAYER].values) == [n for n, w in zip(names, widths)
                                                for _ in range(w)]
    # units off (the default): no unit array, and the other responses unchanged
    plain = probe_model(model, x, y, "rotation", GRID, batch_size=16)
    assert dims.UNIT_RESPONSE not in plain.variables and dims.UNIT_LABEL not in plain.variables
    np.testing.assert_array_equal(plain[dims.ACT].values, ds[dims.ACT].values)
    with pytest.raises(InputError, match="units must be 'channel' or 'none'; found 'pixel'"):
        probe_model(model, x, y, "rotation", GRID, units="pixel")


def test_template_of_a_demo_sized_group_lays_out_no_unit_yet():
    template = probe_template(np.linspace(-45, 45, 31), "rotation", np.zeros(599, int), 10, 2,
                              units="channel")
    assert template[dims.UNIT_RESPONSE].shape == (31, 599, 0)
    assert template[dims.UNIT_TV].shape == (0,)
    assert dims.UNIT_RESPONSE not in probe_template([-1, 0, 1], "rotation", np.zeros(3, int),
                                                    10, 2).variables


@pytest.fixture
def mixed_store(tmp_path):
    """A probe group of three models: CNN5 (conv2 16, conv3 32 channels), a wider
    TwoConvs (a 20, b 5) and one left unprobed; the first two written as the stage writes
    (the first model's units grow the empty unit dim in the driver)."""
    torch.manual_seed(0)
    x, y = images()
    cnn5 = build_model("cnn5", in_channels=1, num_classes=10, image_size=28)
    probes = {"m1": probe_model(cnn5, x, y, "rotation", GRID, units="channel", batch_size=16),
              "m2": probe_model(TwoConvs(), x, y, "rotation", GRID, units="channel",
                                batch_size=16)}
    path = tmp_path / "s.zarr"
    template = probe_template(GRID, "rotation", y.numpy(), 10, 2, units="channel")
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "digits", "rotation", template, ["m1", "m2", "m3"])
        results = [store.write_probe_data(path, "digits", "rotation", m, p)
                   for m, p in probes.items()]
        assert all(r["units"] is not None for r in results)  # none laid out yet: driver
        store.finish_probes(path, "digits", "rotation", results, {"m1": "a", "m2": "b"})
        again = store.write_probe_data(path, "digits", "rotation", "m1", probes["m1"])
        assert again["units"] is None and again["unit_count"] == [16, 32]  # the worker
    return path, probes


def test_mixed_store_units_are_nan_padded_and_labelled(mixed_store):
    path, probes = mixed_store
    plain = xr.open_zarr(path, group="probes/digits/rotation")  # plain xarray reads it
    assert plain[dims.UNIT_RESPONSE].dims == (dims.MID, dims.AUG_PARAM, dims.SAMPLE, dims.UNIT)
    assert plain[dims.UNIT_RESPONSE].dtype == np.float32
    assert plain[dims.UNIT_RESPONSE].encoding["chunks"][0] == 1  # one model per chunk
    ds = store.open_probes(path, "digits", "rotation")
    labels = [str(v) for v in ds[dims.UNIT_LABEL].values]
    # CNN5's 16 + 32 units first, then the 4 more channels TwoConvs has at layer-2
    assert labels == dims.unit_labels([16, 32]) + [f"layer-2/{c}" for c in range(16, 20)]
    # the modules differ at both layers: the positional labels
    assert [str(v) for v in ds[dims.UNIT_LAYER].values] == \
        [label.split("/")[0] for label in labels]
    assert ds[dims.UNIT_COUNT].values.tolist() == [[16, 32], [20, 5], [-1, -1]]
    for mid, probe in probes.items():
        own = [labels.index(str(label)) for label in probe[dims.UNIT_LABEL].values]
        row = ds[dims.UNIT_RESPONSE].sel(mid=mid).values
        np.testing.assert_array_equal(row[..., own], probe[dims.UNIT_RESPONSE].values)
        others = np.setdiff1d(np.arange(len(labels)), own)
        assert np.isnan(row[..., others]).all()  # padding
    assert np.isnan(ds[dims.UNIT_RESPONSE].sel(mid="m3").values).all()


def test_unit_layer_names_modules_every_model_shares(tmp_path):
    x, y = images()
    probes = {m: probe_model(TwoConvs(widths, ("conv2", "conv3")), x, y, "rotation", GRID,
                             units="channel", batch_size=16)
              for m, widths in (("m1", (6, 3)), ("m2", (4, 5)))}
    path = tmp_path / "s.zarr"
    template = probe_template(GRID, "rotation", y.numpy(), 10, 2, units="channel")
    with store.writing(path):
        store.create_store(path)
        store.init_probes(path, "digits", "rotation", template, list(probes))
        for mid, probe in probes.items():  # one at a time: the second grows layer-1
            store.write_probe(path, "digits", "rotation", mid, probe)
    ds = store.open_probes(path, "digits", "rotation")
    assert [str(v) for v in ds[dims.UNIT_LABEL].values] == \
        dims.unit_labels([6, 3]) + ["layer-1/3", "layer-1/4"]
    assert [str(v) for v in ds[dims.UNIT_LAYER].values] == ["conv2"] * 6 + ["conv3"] * 5
    levels = channel_levels(unit_values(ds).compute())
    assert levels[dims.LEVEL_MODULE].values.tolist() == ["conv2_channels", "conv3_channels"]


def test_unit_values_and_channel_levels(mixed_store):
    path, probes = mixed_store
    ds = store.open_probes(path, "digits", "rotation")
    lazy = unit_values(ds)
    assert lazy.dims == (dims.MID, dims.UNIT, dims.RESPONSE_MEASURE)
    assert dask.is_dask_collection(lazy)
    value = lazy.compute()
    assert np.isnan(value.sel(mid="m3")).all()
    labels = [str(v) for v in ds[dims.UNIT_LABEL].values]
    for mid, probe in probes.items():
        own = [labels.index(str(label)) for label in probe[dims.UNIT_LABEL].values]
        ours = value.sel(mid=mid).isel(unit=own)
        # tv, sv, nv: the feature maps' (recorded by the probe; float32 in the store)
        tv, sv = probe[dims.UNIT_TV].values, probe[dims.UNIT_SV].values
        np.testing.assert_allclose(ours.sel(response_measure="tv"), tv, rtol=1e-6)
        np.testing.assert_allclose(ours.sel(response_measure="sv"), sv, rtol=1e-6)
        np.testing.assert_allclose(ours.sel(response_measure="nv"), tv / sv, rtol=2e-6)
        # the others: of the channel means, as response_measures measures the model alone
        # the others: of the channel means, each layer's channels alone (anova's
        # Bonferroni correction counts the layer's own channels, as tmeasures counts a layer's)
        means = xr.DataArray(probe[dims.UNIT_RESPONSE].variable)
        prefix = np.array([str(label).split("/")[0] for label in probe[dims.UNIT_LABEL].values])
        for layer in ("layer-2", "layer-1"):
            alone = response_measures(means.isel(unit=np.flatnonzero(prefix == layer)),
                                      ["anova", "geed_l2", "lee_fd"],
                                      identity_index=len(GRID) // 2, grid_step=10.0,
                                      per_unit=True)
            for name in ("anova", "geed_l2", "lee_fd"):
                np.testing.assert_allclose(
                    ours.isel(unit=np.flatnonzero(prefix == layer)).sel(response_measure=name),
                    alone.sel(response_measure=name), rtol=1e-12)
    levels = channel_levels(value)
    assert levels.dims == (dims.MID, dims.LEVEL, dims.RESPONSE_MEASURE)
    assert levels[dims.LEVEL].values.tolist() == ["layer-2_channels", "layer-1_channels"]
    assert levels[dims.LEVEL_MODULE].values.tolist() == ["", ""]
    prefix = np.array([label.split("/")[0] for label in labels])
    for mid in ("m1", "m2"):
        for k, layer in enumerate(("layer-2", "layer-1")):
            per_unit = value.sel(mid=mid).values[prefix == layer]
            with warnings.catch_warnings():  # a measure NaN at every unit (geed_kl)
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = np.nanmean(np.where(np.isfinite(per_unit), per_unit, np.nan), axis=0)
            np.testing.assert_allclose(levels.sel(mid=mid).values[k], expected, rtol=1e-12)


def test_channel_levels_are_accepted_after_the_usual_levels():
    usual = dims.level_names(2)
    extended = usual + [dims.channel_level("layer-2"), dims.channel_level("layer-1")]
    assert dims.channel_level("layer-1") == "layer-1_channels"
    assert dims.n_layers_of_levels(extended) == 2
    assert dims.prefixes_of_levels(extended) == ["layer-2", "layer-1"]
    assert dims.usual_levels(extended) == usual
    # only after the usual ones, once each, of a recorded layer
    assert dims.n_layers_of_levels(extended[-1:] + usual) is None
    assert dims.n_layers_of_levels(usual + ["layer-1_channels"] * 2) is None
    assert dims.n_layers_of_levels(usual + ["layer-3_channels"]) is None
    assert not dims.is_channel_level("conv3_channels")
    # level_module of a group with channel levels (store check's expectation)
    names = [["conv2", "conv3"], ["conv2", "other"]]
    assert dims.level_modules_of(names, 2, extended)[-3:] == ["", "conv2_channels", ""]
    assert dims.level_modules_of(names, 2) == dims.level_modules(["conv2", ""])


@pytest.mark.filterwarnings("ignore:'pin_memory' argument")
@pytest.mark.filterwarnings("ignore:.*encountered in divide")
def test_nv_per_channel_equals_tmeasures_average_feature_maps():
    """tmeasures 1.2.11 measures nv on the full feature maps (the same model, images and
    grid), reduced per channel by its own AverageFeatureMaps; ml4ml from its probe's unit
    array. Only the spatial mean's rounding (float32 sums) may differ: 1e-5 relative."""
    import tmeasures as tm
    from tmeasures.pytorch.measure_transformer import AverageFeatureMaps
    from tmeasures_tokens import token_inputs

    torch.manual_seed(1)
    model = build_model("cnn5", in_channels=1, num_classes=10, image_size=28)
    x, y = images(26, seed=3)  # two full batches of images and a short one
    probe = probe_model(model, x, y, "rotation", GRID, units="channel", batch_size=16)
    one = probe.expand_dims({dims.MID: ["m"]}).assign_coords({  # a probe group of one
        dims.UNIT_RESPONSE: probe[dims.UNIT_RESPONSE].variable.set_dims(
            {dims.MID: 1, **probe[dims.UNIT_RESPONSE].sizes}),
        dims.UNIT_COUNT: ((dims.MID, dims.LAYER), [[16, 32]]),
        **{name: probe[name].expand_dims({dims.MID: ["m"]}) for name in (dims.UNIT_TV,
                                                                         dims.UNIT_SV)}})
    ours = unit_values(one, ["nv"]).sel(mid="m", response_measure="nv")
    names = [str(n) for n in probe[dims.LAYER_NAME].values]
    maps = feature_maps(model, names, x, GRID)
    n_params, n_samples = len(GRID), x.shape[0]

    tokens, grid = token_inputs(n_params, n_samples)  # (sample, grid position) tokens

    class FeatureMaps(tm.pytorch.ActivationsModule):  # the layers' full outputs
        def activation_names(self):
            return names

        def forward_activations(self, tokens):
            k, s = tokens[:, 1].long(), tokens[:, 0].long()
            return [maps[name][k, s] for name in names]

    options = tm.pytorch.PyTorchMeasureOptions(batch_size=16, num_workers=0, verbose=False)
    measure = tm.pytorch.NormalizedVarianceInvariance(AverageFeatureMaps())
    theirs = measure.eval(tokens, grid, FeatureMaps(), options).numpy()
    expected = np.concatenate([np.asarray(layer, dtype=np.float64) for layer in theirs.layers])
    assert expected.shape == (48,) and probe.sizes[dims.SAMPLE] == 26
    np.testing.assert_allclose(ours.values, expected, rtol=1e-5, atol=0)


def test_stage_records_units_on_request_and_keeps_them_through_add_and_remove(tmp_path):
    """``ml4ml probe`` with ``[probe] units = "channel"``: a store probed without units
    is re-probed for them; a model added later grows nothing (CNN5 again) and gets its
    row; ``measure``, ``remove-models`` and ``store check`` keep working."""
    import crash_harness
    from click.testing import CliRunner

    from ml4ml.cli import cli
    from ml4ml.zoo.training import load_checkpoint

    def run(*args):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    folder = crash_harness.fresh(tmp_path / "f")
    crash_harness.run_stages(folder, "tp")
    path = folder / "db.zarr"
    assert dims.UNIT_RESPONSE not in store.open_probes(path, "digits", "rotation").variables
    spec = folder / "crash.toml"
    spec.write_text(spec.read_text().replace("[probe]\n", "[probe]\nunits = \"channel\"\n"))
    out = run("probe", spec)
    assert "its channels were not recorded" in out and "2 probed" in out
    model, _ = load_checkpoint(folder / "db.zarr.checkpoints" / "m001.pt")
    (folder / "mine").mkdir()
    torch.save(model.state_dict(), folder / "mine" / "a001.pt")
    run("add-models", path, folder / "mine" / "a001.pt", "--arch", "cnn5")
    run("probe", spec)
    ds = store.open_probes(path, "digits", "rotation")
    assert ds[dims.UNIT_COUNT].values.tolist() == [[16, 32]] * 3
    assert [str(v) for v in ds[dims.UNIT_LABEL].values] == dims.unit_labels([16, 32])
    assert [str(v) for v in ds[dims.UNIT_LAYER].values] == ["conv2"] * 16 + ["conv3"] * 32
    # the same weights probed the same: a001's units are m001's
    np.testing.assert_array_equal(ds[dims.UNIT_RESPONSE].sel(mid="a001").values,
                                  ds[dims.UNIT_RESPONSE].sel(mid="m001").values)
    kept = ds[dims.UNIT_RESPONSE].sel(mid="m001").values
    run("measure", path, "-q")  # the matrix measures ignore the units
    run("remove-models", path, "t001", "--force")
    after = store.open_probes(path, "digits", "rotation")
    assert [str(m) for m in after[dims.MID].values] == ["m001", "a001"]
    np.testing.assert_array_equal(after[dims.UNIT_RESPONSE].sel(mid="m001").values, kept)
    assert [str(v) for v in after[dims.UNIT_LAYER].values] == ["conv2"] * 16 + ["conv3"] * 32
    run("store", "check", path)
    levels = channel_levels(unit_values(after).compute())
    assert levels[dims.LEVEL_MODULE].values.tolist() == ["conv2_channels", "conv3_channels"]
    assert np.isfinite(levels.sel(response_measure="nv")).all()


def test_the_digest_covers_a_models_own_units_wherever_they_lie(mixed_store):
    """The digest is the same whichever path placed a model's units (driver or worker),
    ``store check`` recomputes it from the padded rows, and a changed unit value is caught."""
    import zarr

    from ml4ml.store.check import check_store

    path, probes = mixed_store
    ds = store.open_probes(path, "digits", "rotation")
    with store.writing(path):  # m1 again, by the worker path: the same digest
        again = store.write_probe_data(path, "digits", "rotation", "m1", probes["m1"])
    assert again["digest"] == str(ds["digest"].sel(mid="m1").values)
    without = probes["m1"].drop_vars([dims.UNIT_RESPONSE, dims.UNIT_LABEL, dims.UNIT_LAYER,
                                      dims.UNIT_TV, dims.UNIT_SV])
    assert store.probe_digest({name: without[name].values for name in
                               ("prob", "prediction", "confidence", "act", "layer_name")}) \
        != again["digest"]  # the units count
    def checksum_problems():  # (the store has no models table: that problem aside)
        return [p.line() for p in check_store(str(path)) if "checksum" in p.what
                or "non-finite" in p.what]

    assert checksum_problems() == []
    unit = zarr.open_group(str(path), mode="r+")["probes/digits/rotation/unit"]
    row = unit[1]
    labels = [str(v) for v in ds[dims.UNIT_LABEL].values]
    row[0, 0, labels.index("layer-2/17")] += 1.0  # m2's own channel, appended late
    unit[1] = row
    (problem,) = checksum_problems()
    assert "1 done model(s) no longer match the checksum" in problem and "m2" in problem
