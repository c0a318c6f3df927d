"""Which layers a model records (issue 24, point 1): found in nested, TorchScript and
torch.export models alike, chosen per model in the spec or with add-models --layers, the
model's own winning over the spec's [probe] layers, and refused in one line otherwise."""

import io
import warnings

import numpy as np
import pytest
import torch

import crash_harness
from click.testing import CliRunner
from torch import nn

from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.config import load_pipeline
from ml4ml.errors import InputError, SpecError
from ml4ml.probe.responses import probe_model
from ml4ml.zoo.checkpoints import conv_layers, load_export, load_torchscript
from ml4ml.zoo.layers import select_layers


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(),
                                  nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU()))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


CONVS = ["body.0", "body.2", "body.4.0"]


def scripted(model, trace=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        script = (torch.jit.trace(model, torch.zeros(2, 1, 28, 28)) if trace
                  else torch.jit.script(model))
        buffer = io.BytesIO()
        torch.jit.save(script, buffer)
    return load_torchscript(buffer.getvalue(), trusted=True)[0]


def exported(model, batch=None):
    example = torch.zeros(2 if batch is None else batch, 1, 28, 28)
    shapes = ({0: torch.export.Dim("b")},) if batch is None else None
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=shapes), buffer)
    return load_export(buffer.getvalue())[0]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Nested().eval()


@pytest.mark.parametrize("form", ["module", "script", "trace", "export"])
def test_the_convolutions_are_found_in_every_format_and_record_the_same(model, form):
    """The default layers of a nested model are its last two convolutions whatever the
    format, and their statistics equal those of the module in memory, bit for bit."""
    loaded = {"module": lambda: model, "script": lambda: scripted(model),
              "trace": lambda: scripted(model, trace=True),
              "export": lambda: exported(model)}[form]()
    assert conv_layers(loaded) == CONVS
    assert select_layers(loaded) == CONVS[-2:]
    assert select_layers(loaded, n_layers=3) == CONVS
    torch.manual_seed(1)
    images, labels = torch.rand(6, 1, 28, 28), torch.arange(6) % 10
    got = probe_model(loaded, images, labels, "rotation", [-10, 0, 10])
    want = probe_model(model, images, labels, "rotation", [-10, 0, 10])
    assert got[dims.LAYER_NAME].values.tolist() == CONVS[-2:]
    np.testing.assert_array_equal(got[dims.ACT].values, want[dims.ACT].values)
    np.testing.assert_allclose(got[dims.PROB].values, want[dims.PROB].values, atol=1e-6)


def test_any_module_of_a_torchscript_model_is_recordable_by_name(model):
    loaded = scripted(model)
    names = loaded.callable_layers()
    assert {"body", "body.1", "body.4", "body.4.0", "head"} <= set(names)
    torch.manual_seed(2)
    images, labels = torch.rand(4, 1, 28, 28), torch.arange(4)
    got = probe_model(loaded, images, labels, "rotation", [0], layers=["body", "head"])
    want = probe_model(model, images, labels, "rotation", [0], layers=["body", "head"])
    np.testing.assert_array_equal(got[dims.ACT].values, want[dims.ACT].values)
    # no hooks: the script itself runs
    np.testing.assert_array_equal(loaded(images).detach().numpy(),
                                  model(images).detach().numpy())


def test_a_store_records_as_many_layers_per_model_and_says_so(model):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.raises(InputError, match=r"field 'layers': the model has no 2-d convolution "
                                         r"\(nn.Conv2d, or one in a TorchScript or "
                                         r"torch.export graph\) to record by default; 2 "
                                         r"layer\(s\) are recorded per model \(name 2 of its "
                                         r"modules: layers = \[...\] for the model in the "
                                         r"spec, or 'ml4ml add-models --layers NAME'"):
        select_layers(mlp, n_layers=2)
    with pytest.raises(InputError, match=r"the model has only 3 2-d convolution\(s\) "
                                         r"\('body.0', 'body.2', 'body.4.0'\) to record by "
                                         r"default; 4 layer\(s\)"):
        select_layers(model, n_layers=4)
    with pytest.raises(InputError, match=r"3 layer\(s\) named \(body.0, body.2, head\); "
                                         r"every model of the store records 2"):
        select_layers(model, ["body.0", "body.2", "head"], n_layers=2)
    with pytest.raises(InputError, match=r"unknown layer 'conv3'; the model's convolutions "
                                         r"are \['body.0', 'body.2', 'body.4.0'\]"):
        select_layers(model, ["body.0", "conv3"], n_layers=2)


# crash_harness's small store and zoo defaults, with models of their own
SPEC = crash_harness.SPEC.split("[[zoo.models]]")[0] + """
[[zoo.models]]
mid = "m001"
layers = ["conv1", "conv3"]
[[zoo.models]]
mid = "m002"
[zoo.checkpoints]
glob = "*.pt2"
layers = ["body.0", "body.4.0"]
"""


def test_layers_are_chosen_per_model_and_the_models_own_win(model, tmp_path):
    exported_file = tmp_path / "n1.pt2"
    program = torch.export.export(model, (torch.zeros(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, exported_file)
    spec = tmp_path / "layers.toml"
    spec.write_text(SPEC + '[probe]\nlayers = ["conv2", "conv3"]\n')
    pipeline = load_pipeline(spec)
    assert pipeline.layers == {"m001": ("conv1", "conv3"), "n1": ("body.0", "body.4.0")}
    assert [a.layers for a in pipeline.added] == [("body.0", "body.4.0")]
    run = CliRunner().invoke
    assert run(cli, ["train", str(spec), "-q"]).exit_code == 0
    # one more model, with layers of its own from the command line
    torch.save(model.state_dict(), tmp_path / "nested.pt")
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n\n\nclass Nested(nn.Module):\n"
        "    def __init__(self, num_classes=10, in_channels=1):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(),\n"
        "                                  nn.Conv2d(4, 8, 3), nn.ReLU(),\n"
        "                                  nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU()))\n"
        "        self.head = nn.Linear(8, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.body(x).mean((2, 3)))\n")
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        refused = run(cli, ["add-models", "db.zarr", "nested.pt", "--arch",
                            "module:nets:Nested"])
        added = run(cli, ["add-models", "db.zarr", "nested.pt", "--arch",
                          "module:nets:Nested", "--layers", "body.2", "--layers", "head"])
    finally:
        os.chdir(here)
    # without --layers, the spec's [probe] layers are this model's too: it has no conv2
    assert refused.exit_code == 1 and refused.output.count("\n") == 1
    assert ("field 'layers': model 'nested': unknown layer 'conv2'; the model's "
            "convolutions are ['body.0', 'body.2', 'body.4.0']") in refused.output
    assert added.exit_code == 0, added.output
    table = store.read_models(str(tmp_path / "db.zarr"))
    recorded = dict(zip(table["mid"].values.tolist(), table["layers"].values.tolist()))
    assert recorded == {"m001": '["conv1", "conv3"]', "m002": "",
                        "n1": '["body.0", "body.4.0"]', "nested": '["body.2", "head"]'}
    # the probe imports module: code only from the spec (never because a store names it)
    with spec.open("a") as text:
        text.write('[[zoo.models]]\nmid = "nested"\ncheckpoint = "nested.pt"\n'
                   'arch = "module:nets:Nested"\nlayers = ["body.2", "head"]\n')
    probed = run(cli, ["probe", str(spec), "-q"])
    assert probed.exit_code == 0, probed.output
    probes = store.open_probes(str(tmp_path / "db.zarr"), "digits", "rotation")
    names = {m: probes[dims.LAYER_NAME].sel(mid=m).values.tolist()
             for m in probes["mid"].values.tolist()}
    assert names == {"m001": ["conv1", "conv3"], "m002": ["conv2", "conv3"],
                     "n1": ["body.0", "body.4.0"], "nested": ["body.2", "head"]}
    # a changed choice in the spec re-probes that model, and only it
    spec.write_text(spec.read_text().replace('layers = ["conv1", "conv3"]',
                                             'layers = ["conv1", "conv2"]'))
    again = run(cli, ["probe", str(spec)])
    assert again.exit_code == 0, again.output
    assert "re-probing m001: its layers changed" in again.output
    assert "probe: 1 probed, 3 already," in again.output


def test_a_spec_naming_another_count_of_layers_is_one_problem(tmp_path):
    spec = tmp_path / "layers.toml"
    spec.write_text(SPEC.replace('layers = ["conv1", "conv3"]',
                                 'layers = ["conv1", "conv2", "conv3"]'))
    with pytest.raises(SpecError, match=r"field 'zoo.models\[0\].layers': model 'm001' "
                                        r"names 3 layer\(s\); every model records 2 "
                                        r"\(\[probe\] layers, or 2 by default\): name 2"):
        load_pipeline(spec)
    spec.write_text(SPEC.replace('layers = ["conv1", "conv3"]', 'layers = "conv3"'))
    with pytest.raises(SpecError, match=r"field 'zoo.models\[0\].layers': expected a "
                                        r"non-empty list of module names"):
        load_pipeline(spec)
