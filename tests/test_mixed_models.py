"""A model database of mixed architectures and checkpoint formats (issue 24, point 1).

Into a copy of the trained demo store go a torchvision ResNet-18 for 1-channel images (a
state dict, ``--arch torchvision:resnet18``), a scripted CNN whose convolutions sit in an
``nn.Sequential`` (TorchScript), a CNN exported with ``torch.export`` (``--layers`` chosen
for it), a program exported the way PyTorch's tutorial shows (batch size fixed by its
example) and a state dict of the demo's own CNN5. ``ml4ml run`` takes them through probe,
measure, features, labels, assess and report to its verdict; every model's levels are the
same positional ones, each records its own modules, and the labelling page shows them.
"""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from torch import nn

from ml4ml import dims, store
from ml4ml.cli import cli

# a torch.export program whose batch size its example fixed (1): probed in batches of 1
FIXED_BATCH_EXPORT = True
# TorchScript is code: added only with --trust
TRUST = ("--trust",)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


class SequentialCNN(nn.Module):
    """Convolutions inside an nn.Sequential, as the issue's TorchScript model has them."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 5), nn.ReLU(), nn.Conv2d(16, 16, 3),
                                  nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Conv2d(6, 12, 3),
                                      nn.ReLU(), nn.Conv2d(12, 12, 3), nn.ReLU())
        self.classifier = nn.Linear(12, 10)

    def forward(self, x):
        return self.classifier(self.features(x).amax((2, 3)))


def trained(net, seed):
    """``net`` after a few steps on the digits (seeded): not a constant classifier."""
    from ml4ml.data.suites import load_suite

    torch.manual_seed(seed)
    suite = load_suite("digits", "train")
    x, y = suite.images[:256], suite.labels[:256]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(15):
        loss = nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


# each added model: (mid, the layers it records, the option that names them)
ADDED = {
    "r18": ["layer4.1.conv1", "layer4.1.conv2"],  # torchvision's ResNet: its last two convs
    "sq1": ["body.3", "body.5"],  # found inside the scripted Sequential
    "ex1": ["features.0", "features.4"],  # --layers: its first and last convolutions
    "c5a": ["conv2", "conv3"],  # the demo's own architecture
    "fx1": ["features.2", "features.4"],  # fixed batch (FIXED_BATCH_EXPORT)
}


@pytest.fixture(scope="module")
def mixed(demo_run, tmp_path_factory):
    """A copy of the trained demo store with the added models, after ``ml4ml run``."""
    from ml4ml.zoo.architectures import build_model

    folder = tmp_path_factory.mktemp("mixed") / "demo"
    shutil.copytree(demo_run[0], folder)
    path = folder / "demo.zarr"
    files = folder / "mine"
    files.mkdir()
    example = torch.zeros(1, 1, 28, 28)
    torch.manual_seed(0)
    resnet = trained(build_model("torchvision:resnet18", num_classes=10, in_channels=1), 0)
    torch.save(resnet.state_dict(), files / "r18.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(trained(SequentialCNN(), 1)), files / "sq1.ts")
    small = trained(SmallCNN(), 2)
    torch.export.save(torch.export.export(small, (example.repeat(2, 1, 1, 1),),
                                          dynamic_shapes=({0: torch.export.Dim("b")},)),
                      files / "ex1.pt2")
    torch.export.save(torch.export.export(small, (example,)), files / "fx1.pt2")
    cnn5 = trained(build_model("cnn5", num_classes=10, in_channels=1, image_size=(28, 28)), 3)
    torch.save(cnn5.state_dict(), files / "c5a.pt")
    adds = [("add-models", path, files / "r18.pt", "--arch", "torchvision:resnet18"),
            ("add-models", path, files / "sq1.ts", *TRUST),
            ("add-models", path, files / "ex1.pt2", "--layers", "features.0", "--layers",
             "features.4"),
            ("add-models", path, files / "c5a.pt", "--arch", "cnn5")]
    if FIXED_BATCH_EXPORT:
        adds.append(("add-models", path, files / "fx1.pt2"))
    for args in adds:
        result = run(*args)
        assert result.exit_code == 0 and "1 added" in result.output, (args, result.output)
    result = run("run", folder / "demo.toml", "-q")
    return folder, result


def added():
    return [m for m in ADDED if m != "fx1" or FIXED_BATCH_EXPORT]


def test_run_takes_every_architecture_to_its_verdict(mixed):
    folder, result = mixed
    assert result.exit_code == 0, result.output
    assert "verdict:" in result.output
    path = str(folder / "demo.zarr")
    mids = store.model_ids(path)
    assert set(added()) <= set(mids) and len(mids) == 62 + len(added())
    probes = store.open_probes(path, "digits", "rotation")
    measures = store.open_group(path, "measures/digits/rotation")
    assert set(store.done_mids(probes)) == set(mids)
    assert set(store.done_mids(measures)) == set(mids)
    # one level coordinate for every model, by position from the output
    assert measures[dims.LEVEL].values.tolist() == dims.level_names(2)
    matrices = store.open_group(path, "matrices/digits/rotation")
    assert matrices[dims.LEVEL].values.tolist() == dims.level_names(2)
    # each model records its own modules, visible with plain xarray
    names = xr.open_zarr(path, group="probes/digits/rotation")[dims.LAYER_NAME]
    for mid in added():
        assert names.sel(mid=mid).values.tolist() == ADDED[mid], mid
    assert names.sel(mid="m001").values.tolist() == ["conv2", "conv3"]
    assert xr.open_zarr(path, group="measures/digits/rotation")[dims.LAYER_NAME].sel(
        mid="r18").values.tolist() == ADDED["r18"]
    # no module name is every model's now: level_module names the confidence only
    modules = xr.open_zarr(path, group="measures/digits/rotation")[dims.LEVEL_MODULE]
    assert modules.values.tolist() == ["confidence"] + [""] * 16
    # every model has the 80 features, under the same names
    table = pd.read_csv(folder / "demo.zarr.rotation.paper80.csv")
    assert set(added()) <= set(table["mid"]) and len(table) == len(mids)
    assert list(table.columns[17:19]) == ["layer-2_max_sstv", "layer-2_max_mean"]
    for mid in added():
        row = table.set_index("mid").loc[mid]
        assert np.isfinite(row.filter(like="_mean").to_numpy(float)).all(), mid
    assert run("store", "check", path).output == f"{path}: ok\n"


def test_added_models_are_judged_and_drawn(mixed):
    folder, _ = mixed
    path = folder / "demo.zarr"
    result = run("assess", path, "--transform", "rotation", "--predict", *added())
    assert result.exit_code == 0, result.output
    judged = {line.split(":")[0]: line for line in result.output.splitlines()}
    assert sorted(judged) == sorted(added())
    for mid in added():
        assert judged[mid].split(": ")[1].split(" (")[0] in ("invariant", "variant"), mid
    page = (folder / "demo.zarr.report" / "index.html").read_text()
    for mid in added():
        assert f">{mid}<" in page, mid
    # the labelling page offers them and draws their matrices
    from starlette.testclient import TestClient

    from ml4ml.labelling.app import create_app

    app = create_app(str(path), "rotation", "ann")
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    auth = {"Authorization": f"Bearer {app.state.access.tokens['ann']}"}
    aliases = app.state.access.aliases("ann", app.state.labelling.mids)
    for mid in added():
        image = client.get(f"/images/{aliases[mid]}/matrices.png", headers=auth)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n", mid


def test_removing_the_added_models_restores_the_demos_level_modules(mixed, tmp_path):
    """Module names come back as labels once every model left shares them."""
    folder, _ = mixed
    copy = tmp_path / "demo"
    shutil.copytree(folder, copy)
    path = copy / "demo.zarr"
    result = run("remove-models", path, *added())
    assert result.exit_code == 0, result.output
    measures = xr.open_zarr(path, group="measures/digits/rotation")
    assert measures[dims.LEVEL_MODULE].values.tolist()[1:3] == ["conv2_mean", "conv2_std"]
    picked = measures.set_xindex(dims.LEVEL_MODULE).sel({dims.LEVEL_MODULE: "conv3_max"})
    assert picked[dims.LEVEL].item() == "layer-1_max"
    assert run("store", "check", path).output == f"{path}: ok\n"
