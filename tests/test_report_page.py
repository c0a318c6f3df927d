"""The report a researcher reads: small samples flagged, text readable at 100% zoom (in
headless Chromium), a click on a gallery card enlarges it, every quantity and column
defined, the best-feature baseline's feature named."""

import json
import re
import shutil
from collections import Counter
from html import escape
from html.parser import HTMLParser

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from PIL import Image

import browser
from ml4ml.assess.comparison import MIN_LABELLED, MIN_PER_CLASS, power_note
from ml4ml.cli import cli
from ml4ml.report.figures import quantity
from ml4ml.report.page import recipe_range

MIN_TEXT_PX = 10  # every text of every figure, at 100% zoom


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def demo(demo_run):
    folder, _, _ = demo_run
    return folder / "demo.zarr", folder / "demo.zarr.report" / "index.html"


# ----------------------------------------------------------------------------- point 4
def test_power_note_names_the_counts_and_the_thresholds():
    assert (MIN_LABELLED, MIN_PER_CLASS) == (30, 5)
    assert power_note([1, 1, 1, 1, 0, 0, 0]) == (
        "7 labelled models (4 invariant, 3 variant): fewer than 30 labelled, fewer than 5 "
        "invariant, fewer than 5 variant")
    assert power_note([1] * 36 + [0] * 4 + [-1] * 9) == (
        "40 labelled models (36 invariant, 4 variant): fewer than 5 variant")
    assert power_note([1] * 15 + [0] * 14) == (
        "29 labelled models (15 invariant, 14 variant): fewer than 30 labelled")
    assert power_note([1] * 25 + [0] * 5) == ""


def test_assess_flags_seven_expert_labels_and_not_the_demos_62(demo, tmp_path):
    store, _ = demo
    path = tmp_path / "db.zarr"
    shutil.copytree(store, path)
    # the demo's 62 recipe labels (24 invariant, 38 variant): no warning, attrs say so
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "-q")
    assert result.exit_code == 0, result.output
    assert "underpowered" not in result.stderr and "underpowered" not in result.stdout
    attrs = xr.open_zarr(path, group="assess/rotation").attrs
    assert attrs["underpowered"] == 0 and attrs["underpowered_reason"] == ""
    # seven expert labels, two hold-out and five regular, both kinds
    labels = tmp_path / "seven.csv"
    labels.write_text("mid,label\nm001,0\nm002,0\nm017,1\nm018,1\nt001,0\nt013,1\nt014,1\n")
    assert run("label", path, "--transform", "rotation", "--from", labels, "--as",
               "expert").exit_code == 0
    result = run("assess", path, "--transform", "rotation", "--repeats", "2", "-q")
    assert result.exit_code == 0, result.output
    note = ("7 labelled models (4 invariant, 3 variant): fewer than 30 labelled, fewer than "
            "5 invariant, fewer than 5 variant")
    warnings = [line for line in result.stderr.splitlines() if "underpowered" in line]
    assert warnings == [f"warning: the comparison is underpowered: {note} (needs at least 30 "
                        f"labelled models and 5 of each class); label more models before "
                        f"trusting its verdict"]
    ds = xr.open_zarr(path, group="assess/rotation")
    assert ds.attrs["underpowered"] == 1 and ds.attrs["underpowered_reason"] == note
    verdict = ds.attrs["verdict"]
    assert verdict.startswith(f"underpowered comparison, {note}; read it as a hint, not a "
                              f"result: ")
    assert f"  verdict: {verdict}" in result.stdout.splitlines()
    out = tmp_path / "report"
    assert run("report", path, "-o", out, "-q").exit_code == 0
    html = (out / "index.html").read_text()
    assert (f"<p class='warning'><b>Underpowered comparison:</b> {escape(note)} (a verdict "
            f"needs at least 30 labelled models and 5 of each class).") in html
    assert f"<p class='verdict'>{escape(verdict)}</p>" in html


# ----------------------------------------------------------------------------- point 5
def test_the_best_feature_baseline_names_its_feature(demo):
    """The feature recorded is the one FeatureThreshold picks, refit on every label and in
    each training part; each part's rule predicts what the protocol stored."""
    from sklearn.impute import SimpleImputer

    from ml4ml.assess.estimators import FeatureThreshold
    from ml4ml.assess.stage import feature_table

    store, index = demo
    ds = xr.open_zarr(store, group="assess/rotation").load()
    table, _ = feature_table(store, "rotation", labels=True)
    assert table["mid"].tolist() == ds["mid"].values.tolist()
    names = [c for c in table.columns
             if c not in ("mid", "holdout", "partition", "label", "robust_accuracy")]
    X, y = table[names].to_numpy(np.float64), table["label"].to_numpy()

    def fit(rows):
        imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(X[rows])
        return imputer, FeatureThreshold().fit(imputer.transform(X[rows]), y[rows])

    _, refit = fit(np.ones(len(y), bool))
    assert ds.attrs["best_feature"] == names[refit.feature_index_]
    assert ds.attrs["best_feature_rule"] == (f"invariant where {names[refit.feature_index_]} "
                                             f"{refit.direction_} {refit.threshold_:.4g}")
    chosen = Counter()
    stored = ds["prediction"].sel(estimator="baseline_best_feature").values
    for repeat, folds in enumerate(ds["test_fold"].values):
        for fold in range(3):
            imputer, rule = fit(folds != fold)
            chosen[names[rule.feature_index_]] += 1
            test = folds == fold
            assert (rule.predict(imputer.transform(X[test])) == stored[repeat, test]).all()
    assert json.loads(ds.attrs["best_feature_folds"]) == dict(chosen.most_common())
    assert ds.attrs["best_feature_fits"] == 3 * ds.sizes["repeat"] == sum(chosen.values())
    # every model is a CNN5: each feature's layer is named by its module beside it
    assert json.loads(ds.attrs["layer_modules"]) == {"layer-2": "conv2", "layer-1": "conv3"}

    def named(feature):
        layer = {"layer-2": "conv2", "layer-1": "conv3"}.get(feature.split("_", 1)[0])
        return f"{feature} ({layer})" if layer else feature

    often = ", ".join(f"{named(k)} in {v}" for k, v in chosen.most_common())
    text = (f"baseline_best_feature uses {named(ds.attrs['best_feature'])} (refit on every "
            f"label: "
            f"{ds.attrs['best_feature_rule']}); chosen in the protocol's "
            f"{3 * ds.sizes['repeat']} training parts: {often}")
    assert f"<p class='meta' id='best-feature'>{escape(text)}.</p>" in index.read_text()


def test_units_and_definitions():
    assert quantity("confidence") == "RMS Δ confidence\n(probability)"
    assert quantity("layer-1_max_mean") == "RMS Δ layer-1_max_mean\n(layer output)"
    assert quantity("layer-1_max (conv3)", short=True) == "RMS Δ\n(layer output)"
    assert recipe_range("rotation", 30.0) == "± 30 degrees"
    assert recipe_range("scaling", 0.2) == "factor 1 ± 0.2"
    assert recipe_range("brightness", 0.25) == "factor 1 ± 0.25"
    assert recipe_range("none", 0.0) == "none"


class Tables(HTMLParser):
    """Each table's header cells and the terms of the definition list after it."""

    def __init__(self):
        super().__init__()
        self.tables, self.where = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"th": [], "dt": []})
        if tag in ("th", "dt") and self.tables:
            self.where = tag
            self.tables[-1][tag].append("")

    def handle_endtag(self, tag):
        if tag in ("th", "dt"):
            self.where = None

    def handle_data(self, data):
        if self.where:
            self.tables[-1][self.where][-1] += data


def test_every_table_column_plot_and_score_is_defined(demo):
    store, index = demo
    html = index.read_text()
    parser = Tables()
    parser.feed(html)
    assert len(parser.tables) == 4  # the answer, the assessors, the rank, the recipes
    for table in parser.tables:
        terms = {t.strip() for dt in table["dt"] for t in re.split(r",", dt)}
        headers = [th.split(" (")[0] for th in table["th"]]
        assert headers and not [h for h in headers if h not in terms], (headers, terms)
    # the recipe table's range carries its unit; the score is what the refit gives
    assert re.search(r"<td>rotation</td><td>± \d+ degrees</td>", html)
    chosen = xr.open_zarr(store, group="assess/rotation").attrs["chosen_assessor"]
    assert (f"<dt>refit score</dt><dd>mean over the recipe&#x27;s models of the predicted "
            f"probability that the model is invariant, by the chosen assessor ({chosen}) "
            f"refit on every labelled model") in html
    # the importance plot's bars and whiskers (3 repeats x 3 folds, 5 shuffles each)
    assert ("each bar is the mean, over the 9 test folds, of the drop in test accuracy when "
            "the feature's column is shuffled (5 shuffles per fold, averaged); each "
            "whisker is ± 1 standard deviation of those fold means") in html
    # the gallery defines the matrices' quantity and its units
    assert "cell (i, j) is the RMS Δ, the root-mean-square over the all test samples" in html


def _shown_px(file, natural_width, shown_width) -> float:
    """The smallest text of a figure as shown: its size in the PNG's own pixels (text
    chunk), scaled by the shown width over the natural width."""
    image = Image.open(file)
    assert image.size[0] == natural_width, file
    font_px = float(image.info["font_px_min"])
    assert font_px == pytest.approx(float(image.info["font_pt_min"])
                                    * float(image.info["font_dpi"]) / 72, abs=1e-3)
    return font_px * shown_width / natural_width


def test_the_report_in_chromium_loads_every_image_reads_at_10_px_and_enlarges(demo, tmp_path):
    from ml4ml.report.stage import model_figures

    store, index = demo
    folder = index.parent
    with browser.page(viewport=(1200, 1000)) as page:
        page.goto(index.resolve().as_uri())
        page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        page.wait_for_function("Array.from(document.images).every(i => i.complete "
                               "&& i.naturalWidth > 0)", timeout=60000)
        shown = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), "
                              "i.naturalWidth, i.getBoundingClientRect().width])")
        assert len(shown) == 62 + 3  # strips, accuracy, importance, the measures' rank
        sizes = {src: _shown_px(folder / src, natural, width) for src, natural, width in shown}
        assert min(sizes.values()) >= MIN_TEXT_PX, min(sizes.items(), key=lambda kv: kv[1])
        links = page.evaluate("Array.from(document.querySelectorAll('a.enlarge'))"
                              ".map(a => [a.dataset.mid, a.getAttribute('href')])")
        assert len(links) == 62
        for mid, href in links:
            assert href == f"models/full/{mid}.png" and (folder / href).is_file()
        # a click on the sixth card opens that model's strip at full size
        mid = links[5][0]
        thumbnail = {src: natural for src, natural, _ in shown}[f"models/{mid}.png"]
        page.locator(f"#{mid} a.enlarge").click()
        opened = ("(() => { const i = document.querySelector('#enlarged img'); "
                  "return document.getElementById('enlarged').open && i && i.complete "
                  "&& i.naturalWidth > 0 && i.dataset.mid; })()")
        assert page.wait_for_function(opened, timeout=20000).json_value() == mid
        src, natural, width, height = page.evaluate(
            "(() => { const i = document.querySelector('#enlarged img'); return "
            "[i.getAttribute('src'), i.naturalWidth, i.getBoundingClientRect().width, "
            "i.naturalHeight]; })()")
        assert src == f"models/full/{mid}.png" and natural > thumbnail
        assert _shown_px(folder / src, natural, width) >= MIN_TEXT_PX
        # ... and it is that model's: drawn again from the store, pixel for pixel
        drawn = model_figures(store, tmp_path, mids=[mid], layout="full")
        again = np.asarray(Image.open(tmp_path / drawn[mid]).convert("RGB"))
        assert again.shape == (height, natural, 3)
        assert (again == np.asarray(Image.open(folder / src).convert("RGB"))).all()
        other = links[6][0]
        other_full = np.asarray(Image.open(folder / f"models/full/{other}.png").convert("RGB"))
        assert (other_full != again).any()
        page.keyboard.press("Escape")
        assert page.evaluate("[document.getElementById('enlarged').open, "
                             "document.activeElement.dataset.mid]") == [False, mid]
        # the keyboard alone: focus the next card, Enter opens it, Esc closes
        page.locator(f"#{other} a.enlarge").focus()
        page.keyboard.press("Enter")
        assert page.wait_for_function(opened, timeout=20000).json_value() == other
        page.keyboard.press("Escape")
        assert page.evaluate("document.getElementById('enlarged').open") is False
