"""``ml4ml run`` end to end on the demo pipeline, reduced in size; its report in Chromium;
progress on a terminal and in a log."""

import os
import re
import subprocess
import sys
from html import escape
from html.parser import HTMLParser

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import browser
from ml4ml.cli import cli

import docblocks
from conftest import DEMO, demo_command, reduced_demo  # noqa: F401 - reduced_demo: used by others
from test_docs import ci_commands


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cards, self.tables, self.open = [], 0, 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "div" and "card" in attrs.get("class", "").split():
            self.cards += 1
        if tag == "table":
            self.tables += 1


@pytest.fixture(scope="module")
def demo(demo_run):
    return demo_run


def test_the_reduced_demo_runs_end_to_end_and_names_every_output(demo):
    """The setup command of the README and of docs/getting-started.md: its ``ml4ml run``
    on the reduced demo (the fixture runs it), its ``pip install`` as .ci/run runs it."""
    folder, spec, result = demo
    blocks = docblocks.marked("test_demo_run.py::"
                              "test_the_reduced_demo_runs_end_to_end_and_names_every_output")
    assert [b.path for b in blocks] == ["README.md", "docs/getting-started.md"]
    for block in blocks:
        assert demo_command(block, spec) == demo_command(blocks[0], spec)
        (line,) = docblocks.command_lines(block)
        install = docblocks.argv(line.split(" && ", 1)[0])
        assert install in ci_commands(), (block.where(), install)
    out = result.output
    store = folder / "demo.zarr"
    assert "train: 0 added, 62 trained, 0 already" in out and "probe: 62 probed" in out
    assert "measure: digits/rotation: measured 62 model(s)" in out
    assert re.search(r"label: \d+ invariant, \d+ variant \(recipe\)", out)
    assert re.search(r"rank: \d+ of \d+ measure\(s\) scored on 62 labelled model\(s\), "
                     r"best \w+", out)
    assert f"store:    {store} (62 models, 62 measured)" in out
    ds = xr.open_zarr(store, group="assess/rotation").load()
    assert f"verdict:  {ds.attrs['verdict']}" in out
    # what is called the predicted label is out of fold: the majority of the chosen
    # assessor's test-fold predictions over the repeats, recomputed here
    oof = _out_of_fold(ds)
    variant = int((oof == 0).sum())
    chosen = ds.attrs["chosen_assessor"]
    disagree = int((oof != ds["label"].values).sum())
    assert (f"variant:  {variant} of 62 models judged not invariant by {chosen}: {variant} "
            f"of 62 labelled out of fold (the majority over {ds.sizes['repeat']} repeats of "
            f"fits that never saw the model's label); {disagree} disagree with their "
            f"label") in out
    otherwise = int((ds["predicted"].values != oof).sum())
    assert (f"the refit {chosen} (fit on every label, so in-sample) labels {otherwise} of "
            f"those 62 labelled models otherwise") in out
    csv = folder / "demo.zarr.rotation.paper80.csv"
    index = folder / "demo.zarr.report" / "index.html"
    assert f"features: {csv}" in out and f"report:   {index}" in out
    assert csv.is_file() and index.is_file()
    # the numbers: the pair chosen by cross-validation on the regular models, compared on
    # the hold-out models: the difference with its interval, then p, as stored
    figures = {k: float(ds[f"comparison_{k}"]) for k in ("difference", "ci_low", "ci_high",
                                                           "p_value")}
    n_regular = int((~ds["holdout"].values).sum())
    assert (f"chosen by 3 x 5-fold CV on the {n_regular} regular models (CV accuracy " in out
            and f"on the {int(ds['holdout'].sum())} hold-out models {chosen} " in out
            and f"difference {figures['difference']:+.3f} (95% CI {figures['ci_low']:+.3f} "
                f"to {figures['ci_high']:+.3f}), p = {figures['p_value']:.3g}" in out
            and "(exact sign-flip test over the hold-out models)" in out)
    # the interval inverts the test: it excludes 0 exactly when p < 0.05
    assert (figures["p_value"] < 0.05) == (figures["ci_low"] > 0 or figures["ci_high"] < 0)


def _out_of_fold(ds):
    votes = ds["prediction"].sel({"estimator": ds.attrs["chosen_assessor"]}).values
    tested = (votes >= 0).sum(axis=0)
    assert (tested == votes.shape[0]).all()  # every model labelled, tested in every repeat
    return (2 * (votes == 1).sum(axis=0) >= tested).astype(int)


def test_a_rerun_redoes_nothing(demo):
    folder, spec, _ = demo
    result = CliRunner().invoke(cli, ["run", str(spec), "-q"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "train: 0 added, 0 trained, 62 already" in out and "probe: 0 probed, 62 already" in out
    assert "measured 0 model(s), 62 already measured" in out
    assert "label: recipe labels already current" in out
    assert "assess: results already current" in out and "report: already current" in out
    assert "rank: already current (same labels and measures)" in out


def test_the_report_parses_links_only_images_that_exist_and_shows_the_numbers(demo):
    folder, _, _ = demo
    index = folder / "demo.zarr.report" / "index.html"
    page = Page()
    page.feed(index.read_text())
    assert page.cards == 62 and page.tables >= 2
    assert len(page.images) == 62 + 3  # strips, accuracy, importance, the measures' rank
    for src in page.images:
        assert (index.parent / src).is_file(), src
    ds = xr.open_zarr(folder / "demo.zarr", group="assess/rotation").load()
    html = index.read_text()
    for method, accuracy in zip(ds["estimator"].values, ds["summary_accuracy_mean"].values):
        assert re.search(rf"<td>{method}</td><td>\w+</td><td>{accuracy:.3f}</td>", html), method
    assert escape(ds.attrs["verdict"]) in html
    # each card: the out-of-fold label and probability, the refit score named as such,
    # and why they differ
    oof, refit = _out_of_fold(ds), ds["predicted"].values
    names = {1: "invariant", 0: "variant"}
    probability = ds["out_of_fold_probability"].values
    for k, mid in enumerate(ds["mid"].values.tolist()):
        card = html[html.index(f"id='{mid}'"):].split("</div></div>")[0]
        assert (f"predicted <span class='judged {names[int(oof[k])]}'>{names[int(oof[k])]}"
                f"</span> out of fold (P(invariant) {probability[k]:.3f}), refit score "
                f"{float(ds['score'].values[k]):.3f} (in-sample)") in card, mid
        note = f"(the refit assessor says {names[int(refit[k])]}: it saw this model's label)"
        assert (note in card) == (refit[k] != oof[k]), mid
    # the gallery: the models judged variant first, each class by its out-of-fold
    # probability of invariant, lowest first
    order = re.findall(r"<div class='card [^']*' id='([^']+)'>", html)
    mids = ds["mid"].values.tolist()
    key = {m: (1 - int(oof[k]), probability[k], m) for k, m in enumerate(mids)}
    assert order == sorted(mids, key=lambda m: (-key[m][0], key[m][1], m))


def test_the_report_opens_in_headless_chromium(demo, tmp_path):
    folder, _, _ = demo
    index = folder / "demo.zarr.report" / "index.html"
    with browser.page(viewport=(1200, 1600)) as page:
        page.goto(index.resolve().as_uri())
        page.wait_for_function("Array.from(document.images).slice(0, 2)"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=20000)
        card = page.locator(".card img").first  # loaded lazily, once scrolled to
        card.scroll_into_view_if_needed()
        page.wait_for_function("(() => { const i = document.querySelector('.card img'); "
                               "return i.complete && i.naturalWidth > 300; })()",
                               timeout=20000)
        page.evaluate("window.scrollTo(0, 0)")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot))
    browser.assert_not_blank(shot)


def test_plot_draws_one_models_strip(demo, tmp_path):
    folder, _, _ = demo
    out = tmp_path / "m001.png"
    result = CliRunner().invoke(cli, ["plot", str(folder / "demo.zarr"), "--mid", "m001", "-o",
                                      str(out)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    image = Image.open(out)
    assert image.size[0] > 3 * image.size[1] > 300  # a strip of five matrices
    browser.assert_not_blank(out)
    result = CliRunner().invoke(cli, ["plot", str(folder / "demo.zarr"), "--mid", "zz", "-o",
                                      str(out)])
    assert result.exit_code == 1 and "model 'zz' has no matrices" in result.output


SMALL = """
name = "small"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 30
[transforms.rotation]
grid = [-10, 10, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 64
[[zoo.grids]]
seed = [0, 1, 2]
"""


def test_progress_in_a_log_is_plain_lines_and_q_silences_it(tmp_path):
    (tmp_path / "spec.toml").write_text(SMALL)
    result = subprocess.run([sys.executable, "-m", "ml4ml", "train", "spec.toml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stderr and "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "train: 3 model(s) to do"
    assert re.match(r"train: 3/3 model\(s\) in \d+ s, about 0 s left \(m003, acc=", lines[-1])
    quiet = subprocess.run([sys.executable, "-m", "ml4ml", "probe", "spec.toml", "-q"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_progress_on_a_terminal_is_one_bar_with_the_model_and_an_eta(tmp_path):
    import pty

    (tmp_path / "spec.toml").write_text(SMALL)
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "ml4ml", "train", "spec.toml"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower,
                               stdin=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    process.wait(300)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, text
    assert "\r" in text  # a bar redrawn in place, not lines
    assert re.search(r"train m00[123]", text)  # the current model in its description
    assert re.search(r"<\d\d:\d\d", text)  # tqdm's time left
    assert text.count("train: 3 model(s) to do") == 0


def test_the_store_pages_xarray_examples_run_on_the_demo_store(demo):
    """docs/store.md's xarray examples, as written, on the reduced demo; each result checked
    against a computation of its own on the arrays."""
    folder, _, _ = demo
    blocks = docblocks.marked("test_demo_run.py::"
                              "test_the_store_pages_xarray_examples_run_on_the_demo_store")
    assert [b.lang for b in blocks] == ["python", "python"]
    code = "\n".join(block.code for block in blocks)
    assert code.count('path = "stores/demo-digits.zarr"') == 1
    namespace = {}
    exec(code.replace("stores/demo-digits.zarr", str(folder / "demo.zarr")), namespace)
    path = folder / "demo.zarr"
    models = xr.open_zarr(path, group="models").load()
    measures = xr.open_zarr(path, group="measures/digits/rotation").load()
    mids = measures["mid"].values.tolist()
    holdout = models["holdout"].sel(mid=mids).values
    accuracy = measures["accuracy"].values
    curves = namespace["curves"]
    assert curves.dims == ("holdout", "aug_param") and curves.shape == (2, 31)
    np.testing.assert_allclose(curves.sel(holdout=True).values, accuracy[holdout].mean(0))
    np.testing.assert_allclose(curves.sel(holdout=False).values, accuracy[~holdout].mean(0))
    grad = measures["value"].sel(level="confidence", split="correct", interval=0,
                                 measure="grad_v_std").values
    ranges = models["aug_range"].sel(mid=mids).values
    by_range = namespace["by_range"]
    assert sorted(by_range["aug_range"].values.tolist()) == sorted(set(ranges.tolist()))
    for value in set(ranges.tolist()):
        np.testing.assert_allclose(by_range.sel(aug_range=value).values,
                                   np.nanmedian(grad[ranges == value]))
    robust = measures["robust_accuracy"].sel(interval=0).values
    assert namespace["fragile_mids"] == [m for m, r in zip(mids, robust) if r < 0.5]
    probes = xr.open_zarr(path, group="probes/digits/rotation").load()
    np.testing.assert_allclose(namespace["mean_confidence"].values,
                               probes["confidence"].values.astype(np.float64).mean(-1),
                               rtol=1e-6)
    stored = xr.open_zarr(path, group="labels/rotation").load()
    assert namespace["labels"].values.tolist() == stored["label"].sel(source="recipe").values.tolist()
    table = namespace["table"]
    assessed = xr.open_zarr(path, group="assess/rotation").load()
    assert sorted(table.index) == sorted(assessed["estimator"].values.tolist())
    assert table.iloc[-1] == assessed["accuracy"].mean(["repeat", "fold"]).max()
    k = assessed["estimator"].values.tolist().index("random_forest")
    np.testing.assert_array_equal(namespace["forest"].values, assessed["accuracy"].values[..., k])
    # positional levels: layer-1 is CNN5's conv3, the last recorded layer
    last = measures["value"].sel(level="layer-1_max", split="correct").values
    m = measures["measure"].values.tolist().index("mean")
    np.testing.assert_array_equal(namespace["last"].values, last[..., m])
    np.testing.assert_array_equal(namespace["conv3"].values, last[..., m])
    assert namespace["conv3"]["level"].item() == "layer-1_max"
    assert namespace["recorded"] == ["conv2", "conv3"]
    wide = models["aug_range"].values == 45
    assert namespace["wide"]["mid"].values.tolist() == models["mid"].values[wide].tolist()


def test_the_readmes_store_example_runs_on_the_demo_store(demo):
    """The README's one store example, as written, on the reduced demo; the curves checked
    against numpy on the stored arrays."""
    folder, _, _ = demo
    (block,) = docblocks.marked("test_demo_run.py::"
                                "test_the_readmes_store_example_runs_on_the_demo_store")
    assert block.code.count('path = "stores/demo-digits.zarr"') == 1
    namespace = {}
    exec(block.code.replace("stores/demo-digits.zarr", str(folder / "demo.zarr")), namespace)
    models = xr.open_zarr(folder / "demo.zarr", group="models").load()
    measures = xr.open_zarr(folder / "demo.zarr", group="measures/digits/rotation").load()
    holdout = models["holdout"].sel(mid=measures["mid"].values).values
    accuracy = measures["accuracy"].values
    curves = namespace["curves"]
    assert curves.dims == ("holdout", "aug_param") and curves.shape == (2, 31)
    np.testing.assert_allclose(curves.sel(holdout=True).values, accuracy[holdout].mean(0))
    np.testing.assert_allclose(curves.sel(holdout=False).values, accuracy[~holdout].mean(0))


def test_the_readmes_response_measure_example_runs_on_the_demo_store(demo, tmp_path):
    """The README's own response measure, as written, on a copy of the reduced demo: it is
    appended for every measured model from the stored probes (the probe chunks are not
    written), equal to numpy's range on the stored responses, the built-in ones unchanged."""
    import hashlib
    import shutil

    from ml4ml.measure.responses import unregister_response_measure

    folder, _, _ = demo
    path = tmp_path / "demo.zarr"
    shutil.copytree(folder / "demo.zarr", path)
    probe_files = sorted(f for f in (path / "probes").rglob("*") if f.is_file())
    before = [hashlib.sha256(f.read_bytes()).hexdigest() for f in probe_files]
    group = "measures/digits/rotation"
    builtin = xr.open_zarr(path, group=group)["response_value"].load()
    (block,) = docblocks.marked("test_demo_run.py::"
                                "test_the_readmes_response_measure_example_runs_on_the_demo_store")
    assert block.code.count('"stores/demo-digits.zarr"') == 1
    try:
        exec(block.code.replace("stores/demo-digits.zarr", str(path)), {})
    finally:
        unregister_response_measure("orbit_range")
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in probe_files] == before
    value = xr.open_zarr(path, group=group)["response_value"].load()
    names = list(builtin["response_measure"].values)
    assert list(value["response_measure"].values) == names + ["orbit_range"]
    np.testing.assert_array_equal(value.sel(response_measure=names).values, builtin.values)
    probes = xr.open_zarr(path, group="probes/digits/rotation")
    prob = probes["prob"].sel(mid=value["mid"].values).values.astype(np.float64)
    np.testing.assert_allclose(value.sel(response_measure="orbit_range", level="confidence"),
                               np.ptp(prob, axis=1).mean(axis=(1, 2)), rtol=1e-12)
    act = probes["act"].sel(mid=value["mid"].values, layer=1, stat="max").values
    np.testing.assert_allclose(value.sel(response_measure="orbit_range", level="layer-1_max"),
                               np.ptp(act.astype(np.float64), axis=1).mean(axis=1),
                               rtol=1e-12)


def test_the_protocol_split_example_runs_on_the_demo_store(demo, tmp_path, monkeypatch):
    """docs/assess.md: the features command, then ProtocolSplit in cross_validate, as
    written, on the reduced demo. Every repeat's hold-out fold is the forest fit on the
    regular models alone, which sklearn computes here without ProtocolSplit."""
    from sklearn.ensemble import RandomForestClassifier

    folder, _, _ = demo
    command, code = docblocks.marked("test_demo_run.py::"
                                     "test_the_protocol_split_example_runs_on_the_demo_store")
    assert (command.lang, code.lang) == ("bash", "python")
    monkeypatch.chdir(tmp_path)
    (line,) = docblocks.command_lines(command)
    words = docblocks.argv(line.replace("stores/demo-digits.zarr", str(folder / "demo.zarr")))
    assert words[0] == "ml4ml"
    result = CliRunner().invoke(cli, words[1:])
    assert result.exit_code == 0, result.output
    namespace = {}
    exec(code.code, namespace)
    table, scores = namespace["table"], namespace["scores"]["test_score"]
    assert len(table) == 62 and namespace["X"].shape == (62, 80)  # the paper80 features
    assert len(scores) == 30  # 10 repeats x 3 folds
    holdout = table["holdout"].values.astype(bool)
    X, y = namespace["X"].values, table["label"].values
    alone = RandomForestClassifier(random_state=0).fit(X[~holdout], y[~holdout])
    expected = alone.score(X[holdout], y[holdout])
    assert np.isclose(scores, expected).sum() >= 10, (expected, scores)


def test_the_python_example_runs_on_a_copy_of_the_demo_store(demo, tmp_path):
    """docs/reference/python.md, as written, on a copy of the reduced demo: the matrices it
    computes in memory are those the store holds; the plugin measure is written for every
    model; the response measure is one finite number per model."""
    import shutil

    from ml4ml.measure import measures as registry

    folder, _, _ = demo
    shutil.copytree(folder / "demo.zarr", tmp_path / "demo.zarr")
    (block,) = docblocks.marked("test_demo_run.py::"
                                "test_the_python_example_runs_on_a_copy_of_the_demo_store")
    namespace = {}
    try:
        exec(block.code.replace("stores/demo-digits.zarr", str(tmp_path / "demo.zarr")),
             namespace)
    finally:
        registry.unregister_measure("frobenius")
    stored = xr.open_zarr(tmp_path / "demo.zarr", group="matrices/digits/rotation").load()
    mats = namespace["mats"]["matrix"].compute()
    assert mats.dims == ("mid", "level", "split", "kind", "aug_param_i", "aug_param_j")
    np.testing.assert_allclose(mats.values, stored["matrix"].sel(mid=mats["mid"]).values,
                               rtol=1e-6, equal_nan=True)
    written = xr.open_zarr(tmp_path / "demo.zarr", group="measures/digits/rotation").load()
    frobenius = written["value"].sel(measure="frobenius", interval=0)
    assert frobenius.sizes["mid"] == 62 and np.isfinite(frobenius.values).mean() > 0.9
    values = namespace["values"].compute()
    assert values.dims == ("mid", "level", "split", "interval", "measure")
    nv = namespace["r"].sel(response_measure="nv").compute()
    assert nv.sizes == {"mid": 62} and np.isfinite(nv.values).all()
