"""Models trained elsewhere (state dict, torch.export, TorchScript) added to a store and probed."""

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ml4ml
from ml4ml import dims, store
from ml4ml.cli import cli
from ml4ml.data.suites import load_suite

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 5)
        self.conv2 = nn.Conv2d(4, 8, 5)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))
'''

SPEC = """
name = "mine"
[store]
path = "mine.zarr"
[suites.digits]
n_samples = 20
[transforms.rotation]
grid = [-20, 20, 5]
"""
GRID = np.linspace(-20, 20, 5)
MEAN, STD = (0.5,), (0.25,)


def export(net, example):
    return torch.export.export(net, (example,), dynamic_shapes=({0: torch.export.Dim("b")},))


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three small CNNs trained with plain torch; each saved as state dict, .pt2 and .ts."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "mynets.py").write_text(NET)
    namespace = {}
    exec(NET, namespace)
    suite = load_suite("digits", "train")
    x, y = suite.images[:256], suite.labels[:256]
    nets = {}
    for seed in range(3):
        torch.manual_seed(seed)
        net = namespace["Net"]()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(net((x - MEAN[0]) / STD[0]), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        name = f"n{seed}"
        torch.save(net.state_dict(), folder / f"{name}.pt")
        example = x[:2]
        torch.export.save(export(net, example), folder / f"{name}.pt2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(net, example), folder / f"{name}.ts")
        nets[name] = net
    return folder, nets


def spec_with(folder, tmp_path, zoo):
    (tmp_path / "mynets.py").write_text(NET)
    spec = tmp_path / "mine.toml"
    spec.write_text(SPEC + zoo.replace("MODELS", str(folder)))
    return spec


ZOO = """
[[zoo.models]]
mid = "sd0"
checkpoint = "MODELS/n0.pt"
arch = "module:mynets:Net"
normalize_mean = [0.5]
normalize_std = [0.25]
[zoo.checkpoints]
glob = "MODELS/*.pt2"
normalize_mean = [0.5]
normalize_std = [0.25]
"""


def stored_prob(path, mid):
    ds = store.open_probes(path, "digits", "rotation")
    return ds[dims.PROB].sel({dims.MID: mid}).values


def test_added_models_probe_as_in_memory(models, tmp_path):
    folder, nets = models
    spec = spec_with(folder, tmp_path, ZOO)
    assert run("validate", spec).exit_code == 0
    result = run("train", spec)
    assert result.exit_code == 0, result.output
    assert "4 added, 0 trained, 0 already" in result.output
    path = tmp_path / "mine.zarr"
    out = run("add-models", path, folder / "n1.ts", folder / "n2.ts", "--mid", "s1", "--mid",
              "s2", "--normalize-mean", "0.5", "--normalize-std", "0.25", "--trust")
    assert out.exit_code == 0, out.output
    assert "2 added, 0 already" in out.output
    result = run("probe", spec)
    assert result.exit_code == 0, result.output
    assert "probe: 6 probed," in result.output
    suite = load_suite("digits", "test", n_samples=20)
    for mid, net in (("sd0", "n0"), ("n0", "n0"), ("n1", "n1"), ("n2", "n2"), ("s1", "n1"),
                     ("s2", "n2")):
        expected = ml4ml.probe_model(nets[net], suite.images, suite.labels, "rotation", GRID,
                                     normalize=(MEAN, STD))
        np.testing.assert_allclose(stored_prob(path, mid), expected[dims.PROB].values,
                                   atol=1e-6)
    table = store.read_models(path)
    assert list(table["source"].values) == ["added"] * 6
    assert table["checkpoint_sha256"].sel(mid="n1").item() == hashlib.sha256(
        (folder / "n1.pt2").read_bytes()).hexdigest()
    assert table["input_shape"].sel(mid="s1").item() == "[1, 28, 28]"
    # again: nothing to do
    assert "0 added, 0 trained, 4 already" in run("train", spec).output
    assert "0 added, 2 already" in run("add-models", path, folder / "n1.ts", folder / "n2.ts",
                                       "--mid", "s1", "--mid", "s2", "--normalize-mean",
                                       "0.5", "--normalize-std", "0.25").output


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_bad_inputs_one_line_store_untouched(models, tmp_path):
    folder, nets = models
    spec = spec_with(folder, tmp_path, ZOO)
    assert run("train", spec).exit_code == 0
    path = tmp_path / "mine.zarr"
    before = snapshot(path)
    (tmp_path / "junk.bin").write_bytes(b"not a model at all")
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5))
    torch.save(other.state_dict(), tmp_path / "five.pt")
    torch.save(other, tmp_path / "whole.pt")  # a whole pickled module
    program = export(other, torch.zeros(2, 1, 28, 28))
    torch.export.save(program, tmp_path / "five.pt2")
    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    torch.export.save(export(wide, torch.zeros(2, 3, 32, 32)),
                      tmp_path / "wide.pt2")
    nan = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        nan[1].bias.fill_(float("nan"))
    torch.export.save(export(nan, torch.zeros(2, 1, 28, 28)),
                      tmp_path / "nan.pt2")
    cases = {
        (tmp_path / "missing.pt",): "checkpoint file not found",
        (folder / "n0.pt", "--arch", "cnn5", "--mid", "x0"): "the state dict does not fit arch 'cnn5'",
        (tmp_path / "whole.pt",): "loading it would run arbitrary code",
        (tmp_path / "wide.pt2",): "cannot take the images of suite 'digits'",
        (tmp_path / "five.pt2",): "has 5 outputs, suite 'digits' has 10 classes",
        (tmp_path / "nan.pt2",): "gives NaN or infinite outputs",
        (tmp_path / "junk.bin",): "unknown checkpoint format",
        (tmp_path / "five.pt",): "needs its architecture",
    }
    for args, message in cases.items():
        result = run("add-models", path, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output, \
            result.output
        assert snapshot(path) == before, args


def test_replaced_checkpoint_redoes_that_model_only(models, tmp_path):
    folder, nets = models
    local = tmp_path / "models"
    local.mkdir()
    for name in ("n0.pt2", "n1.pt2"):
        (local / name).write_bytes((folder / name).read_bytes())
    spec = spec_with(local, tmp_path, '[zoo.checkpoints]\nglob = "MODELS/*.pt2"\n')
    assert run("train", spec).exit_code == 0
    assert run("probe", spec).exit_code == 0
    path = tmp_path / "mine.zarr"
    old = {m: stored_prob(path, m) for m in ("n0", "n1")}
    (local / "n1.pt2").write_bytes((folder / "n2.pt2").read_bytes())
    refused = run("train", spec)
    assert refused.exit_code == 1 and "--force" in refused.output
    assert "1 added, 0 trained, 1 already" in run("train", spec, "--force").output
    result = run("probe", spec)
    assert "probe: 1 probed, 1 already," in result.output
    np.testing.assert_array_equal(stored_prob(path, "n0"), old["n0"])
    assert not np.allclose(stored_prob(path, "n1"), old["n1"])


def test_module_import_error_is_one_line(models, tmp_path):
    folder, _ = models
    spec = spec_with(folder, tmp_path, ZOO.replace("mynets:Net", "nosuchmod:Net"))
    # with --scheduler the spec is loaded (and the module imported) before connecting: the
    # same line, whether a scheduler listens there or not
    for args in (("validate", spec), ("train", spec), ("train", spec, "--workers", "1"),
                 ("train", spec, "--scheduler", "tcp://127.0.0.1:9"),
                 ("run", spec, "--scheduler", "tcp://127.0.0.1:9")):
        result = run(*args)
        assert result.exit_code == 1
        assert "cannot import module 'nosuchmod'" in result.output
        assert result.output.count("\n") == 1, result.output


def test_label_from_recipe_counts_models_without_recipe(models, tmp_path):
    folder, _ = models
    spec = spec_with(folder, tmp_path, '[zoo.checkpoints]\nglob = "MODELS/*.pt2"\n'
                     'normalize_mean = [0.5]\nnormalize_std = [0.25]\n')
    assert run("train", spec).exit_code == 0 and run("probe", spec).exit_code == 0
    path = tmp_path / "mine.zarr"
    assert run("measure", path).exit_code == 0
    result = run("label", path, "--transform", "rotation", "--from", "recipe")
    assert result.exit_code == 0, result.output
    assert "labelled 0 model(s)" in result.output
    assert "3 model(s) have no recipe (trained elsewhere or imported) and are left unknown" \
        in result.output
    labels = tmp_path / "labels.csv"
    labels.write_text("mid,label\nn0,1\nn1,0\nn2,1\n")
    result = run("label", path, "--transform", "rotation", "--from", labels)
    assert result.exit_code == 0 and "labelled 3 model(s)" in result.output, result.output
    features = tmp_path / "f.csv"
    result = run("features", path, "--transform", "rotation", "-o", features)
    assert result.exit_code == 0 and "wrote 3 model(s)" in result.output, result.output


MIXED = """
[zoo]
arch = "cnn5"
epochs = 1
n_train = 32
[[zoo.models]]
mid = "m001"
[[zoo.models]]
mid = "m002"
seed = 1
[[zoo.models]]
mid = "t0"
checkpoint = "MODELS/n0.pt"
arch = "module:mynets:Net"
holdout = true
normalize_mean = [0.5]
normalize_std = [0.25]
[zoo.checkpoints]
glob = "MODELS/n[12].pt2"
normalize_mean = [0.5]
normalize_std = [0.25]
"""


def test_a_store_mixing_added_and_trained_models_goes_through_every_stage(models, tmp_path):
    folder, _ = models
    spec = spec_with(folder, tmp_path, MIXED)
    result = run("train", spec, "-q")
    assert result.exit_code == 0, result.output
    assert "3 added, 2 trained, 0 already" in result.output
    path = tmp_path / "mine.zarr"
    out = run("add-models", path, folder / "n2.ts", "--mid", "t2", "--holdout",
              "--normalize-mean", "0.5", "--normalize-std", "0.25", "--trust")
    assert out.exit_code == 0 and "1 added, 0 already" in out.output, out.output
    result = run("probe", spec, "-q")
    assert result.exit_code == 0 and "probe: 6 probed," in result.output, \
        result.output
    result = run("measure", path, "-q")
    assert result.exit_code == 0, result.output
    assert "measured 6 model(s)" in result.output, result.output
    measures = store.open_group(str(path), "measures/digits/rotation")
    assert sorted(store.done_mids(measures)) == ["m001", "m002", "n1", "n2", "t0", "t2"]
    labels = tmp_path / "labels.csv"
    labels.write_text("mid,label\nm001,1\nm002,0\nn1,1\nn2,0\nt0,1\nt2,0\n")
    result = run("label", path, "--transform", "rotation", "--from", labels)
    assert result.exit_code == 0 and "labelled 6 model(s)" in result.output, result.output
    # (adaboost left out: on six near-random models it may refuse to fit, a matter of
    # the assessors, not of added models)
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "--assessor",
                 "decision_tree", "--assessor", "logistic", "-q")
    assert result.exit_code == 0, result.output
    assert "assess rotation: 6 labelled model(s) (labels 'file')" in result.output
    predicted = store.open_group(str(path), "assess/rotation")
    assert sorted(str(m) for m in predicted[dims.MID].values) == \
        ["m001", "m002", "n1", "n2", "t0", "t2"]
    report = tmp_path / "report"
    result = run("report", path, "-o", report)
    assert result.exit_code == 0, result.output
    page = (report / "index.html").read_text()
    for mid in ("m001", "m002", "n1", "n2", "t0", "t2"):
        assert f">{mid}<" in page, mid
    png = tmp_path / "t2.png"
    result = run("plot", path, "--mid", "t2", "-o", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the labelling page offers added and trained models alike, draws them, takes ratings
    from starlette.testclient import TestClient

    from ml4ml.labelling.app import create_app

    app = create_app(str(path), "rotation", "ann")
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    auth = {"Authorization": f"Bearer {app.state.access.tokens['ann']}"}
    aliases = app.state.access.aliases("ann", app.state.labelling.mids)
    offered = [client.get("/api/next", headers=auth).json()["alias"]]
    for _ in range(5):
        offered.append(client.get(f"/api/next?any=1&after={offered[-1]}", headers=auth)
                       .json()["alias"])
    assert sorted(offered) == sorted(aliases.values())
    assert sorted(aliases) == ["m001", "m002", "n1", "n2", "t0", "t2"]
    for kind in ("matrices", "accuracy"):
        image = client.get(f"/images/{aliases['t2']}/{kind}.png", headers=auth)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
    for mid, label in (("t2", 0), ("n1", 1)):
        saved = client.post("/api/labels", json={"alias": aliases[mid], "label": label},
                            headers={**auth, "Origin": "http://127.0.0.1:8765"})
        assert saved.status_code == 200, saved.text
    rated = client.get("/api/labels", headers=auth).json()
    assert {r["alias"]: r["label"] for r in rated["labels"]} == \
        {aliases["t2"]: 0, aliases["n1"]: 1}
    assert run("store", "check", path).output == f"{path}: ok\n"


def test_add_models_force_redoes_a_replaced_checkpoint_and_nothing_for_the_same_bytes(
        models, tmp_path):
    """Lineage through ``add-models --force``: the same bytes change nothing; other bytes
    make probe and measure redo that model only (the other's rows stay bit-identical)."""
    folder, _ = models
    local = tmp_path / "models"
    local.mkdir()
    for name in ("n0.pt2", "n1.pt2"):
        (local / name).write_bytes((folder / name).read_bytes())
    path = tmp_path / "mine.zarr"
    spec = spec_with(local, tmp_path, '[zoo.checkpoints]\nglob = "MODELS/*.pt2"\n')
    assert run("train", spec).exit_code == 0 and run("probe", spec).exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    before = {m: stored_prob(path, m) for m in ("n0", "n1")}
    values = store.open_group(str(path), "measures/digits/rotation")["value"].load()
    same = run("add-models", path, local / "n1.pt2", "--mid", "n1", "--force")
    assert same.exit_code == 0 and "0 added, 1 already" in same.output, same.output
    assert "probe: 0 probed, 2 already," in run("probe", spec).output
    (local / "n1.pt2").write_bytes((folder / "n2.pt2").read_bytes())
    other = run("add-models", path, local / "n1.pt2", "--mid", "n1", "--force")
    assert other.exit_code == 0 and "1 added (1 replaced), 0 already" in other.output, \
        other.output
    assert "probe: 1 probed, 1 already," in run("probe", spec).output
    measured = run("measure", path)
    assert measured.exit_code == 0 and "measured 1 model(s), re-measured n1 (its probe data " \
        "changed), 1 already measured" in measured.output, measured.output
    np.testing.assert_array_equal(stored_prob(path, "n0"), before["n0"])
    assert not np.allclose(stored_prob(path, "n1"), before["n1"])
    after = store.open_group(str(path), "measures/digits/rotation")["value"].load()
    np.testing.assert_array_equal(after.sel(mid="n0").values, values.sel(mid="n0").values)
    assert not np.allclose(after.sel(mid="n1").values, values.sel(mid="n1").values,
                           equal_nan=True)


def test_add_models_from_python_saves_beside_the_store_and_probes_as_in_memory(models,
                                                                              tmp_path):
    folder, nets = models
    spec = spec_with(folder, tmp_path, '[zoo.checkpoints]\nglob = "MODELS/n0.pt2"\n'
                     'normalize_mean = [0.5]\nnormalize_std = [0.25]\n')
    assert "1 added, 0 trained, 0 already" in run("train", spec).output
    path = tmp_path / "mine.zarr"
    report = ml4ml.add_models(path, {"p0": nets["n0"], "p1": nets["n1"]}, pipeline=spec,
                              normalize_mean=MEAN, normalize_std=STD)
    assert report.added == ["p0", "p1"] and report.already == []
    saved = tmp_path / "mine.zarr.checkpoints"
    assert sorted(p.name for p in saved.iterdir()) == ["p0.pt2", "p1.pt2"]
    report = ml4ml.add_models(path, {"sd": nets["n2"]}, arch="module:mynets:Net",
                              pipeline=spec, base=tmp_path, normalize_mean=MEAN,
                              normalize_std=STD)
    assert report.added == ["sd"] and (saved / "sd.pt").is_file()
    table = store.read_models(path)
    assert table["checkpoint_format"].values.tolist() == ["export"] * 3 + ["state_dict"]
    assert table["checkpoint"].sel(mid="p0").item() == str(saved / "p0.pt2")
    assert table["arch_sha256"].sel(mid="sd").item() == hashlib.sha256(
        (tmp_path / "mynets.py").read_bytes()).hexdigest()
    # the store alone never chooses code: the probe imports module:mynets:Net only when its
    # spec names it
    result = run("probe", spec)
    assert result.exit_code == 1 and "1 failed: sd (field 'arch': model 'sd' has architecture "\
        "'module:mynets:Net', which the spec does not name" in result.output, result.output
    spec.write_text(spec.read_text() + '[[zoo.models]]\nmid = "sd"\ncheckpoint = '
                    '"mine.zarr.checkpoints/sd.pt"\narch = "module:mynets:Net"\n'
                    'normalize_mean = [0.5]\nnormalize_std = [0.25]\n')
    result = run("probe", spec)
    assert result.exit_code == 0 and "probe: 1 probed, 3 already," in result.output, \
        result.output
    suite = load_suite("digits", "test", n_samples=20)
    for mid, net in (("p0", "n0"), ("p1", "n1"), ("sd", "n2"), ("n0", "n0")):
        expected = ml4ml.probe_model(nets[net], suite.images, suite.labels, "rotation", GRID,
                                     normalize=(MEAN, STD))
        np.testing.assert_allclose(stored_prob(path, mid), expected[dims.PROB].values,
                                   atol=1e-6)
    # the same modules again: nothing to do
    assert ml4ml.add_models(path, {"p0": nets["n0"]}, pipeline=spec, normalize_mean=MEAN,
                            normalize_std=STD).already == ["p0"]


def test_an_export_whose_raw_weights_start_like_a_pickle_loads(tmp_path):
    from ml4ml.zoo.checkpoints import load_export

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():  # its first byte is 0x80, as a pickle's
        net[1].bias[0] = float(np.frombuffer(b"\x80\x00\x80\x3f", np.float32)[0])
    file = tmp_path / "x.pt2"
    torch.export.save(export(net.eval(), torch.zeros(2, 1, 28, 28)), file)
    module, _ = load_export(file.read_bytes(), str(file))
    x = torch.rand(3, 1, 28, 28)
    np.testing.assert_array_equal(module(x).detach().numpy(), net(x).detach().numpy())


def test_the_own_models_page_runs_as_written(tmp_path):
    """docs/own-models.md: its files written, its commands run in order."""
    import shlex
    import subprocess
    import sys

    import docblocks

    blocks = [(block.lang, block.code) for block in docblocks.marked(
        "test_added_models.py::test_the_own_models_page_runs_as_written")]
    steps = []
    for lang, body in blocks:
        if lang in ("python", "toml"):
            name = body.split("\n", 1)[0].removeprefix("# ").split()[0].rstrip(":")
            (tmp_path / name).write_text(body)
        else:
            steps += [line for line in body.splitlines() if line.strip()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["convert.py", "make_models.py",
                                                          "mine.toml", "mynets.py"]
    assert len(steps) == 10
    outputs = []
    for line in steps:
        line = line.split("  #", 1)[0]
        command = line.replace("ml4ml ", f"{shlex.quote(sys.executable)} -m ml4ml ", 1) \
            if line.startswith("ml4ml ") else \
            line.replace("python ", f"{shlex.quote(sys.executable)} ", 1)
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, (line, done.stdout, done.stderr[-3000:])
        assert "Traceback" not in done.stderr, done.stderr
        outputs.append(done.stdout)
    assert "3 models (2 regular, 1 hold-out, 3 trained elsewhere)" in outputs[1]
    assert "3 added, 0 trained, 0 already" in outputs[2]
    assert "1 added, 0 already" in outputs[3]
    assert "probe: 4 probed, 0 already," in outputs[4]
    assert "measured 4 model(s), 0 already measured" in outputs[5]
    assert "labelled 4 model(s) for rotation from labels.csv: 2 invariant, 2 variant" \
        in outputs[7]
    assert "assess rotation: 4 labelled model(s) (labels 'file')" in outputs[8]
    assert "report of 4 model(s)" in outputs[9]
    path = tmp_path / "mine.zarr"
    table = store.read_models(path)
    assert table["checkpoint_format"].to_series().to_dict() == {
        "m1": "export", "m2": "export", "t001": "state_dict", "t003": "torchscript"}
    assert table["holdout"].to_series().to_dict() == {"m1": False, "m2": False, "t001": True,
                                                      "t003": True}
    assert (tmp_path / "mine.report" / "index.html").is_file()
    assert run("store", "check", path).output == f"{path}: ok\n"
    assert "Test models you already trained" in run("--help").output
    # the TorchScript file, turned into a state dict as the section shows, is data
    done = subprocess.run([sys.executable, "convert.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "ml4ml", "add-models", "mine.zarr",
                           "more/m3.pt", "--arch", "module:mynets:Net", "--mid", "t004",
                           "--holdout", "--normalize-mean", "0.5", "--normalize-std", "0.25"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "1 added, 0 already" in done.stdout, done.stderr
    table = store.read_models(path)
    assert table["trusted"].to_series().to_dict() == {
        "m1": False, "m2": False, "t001": False, "t003": True, "t004": False}
