"""The report and the labelling page come from Jinja2 templates (autoescaped): the report
is the page the f-string code gave (golden pages, apart from whitespace), and nothing a
user chose (store path, model id, suite, guideline, rater) reaches either page unescaped."""

import re
import shutil
from html import escape
from pathlib import Path

import golden
import pytest
from click.testing import CliRunner

from ml4ml.cli import cli

PAGES = Path(__file__).resolve().parent / "data" / "report_pages"
MIDS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "t1", "t2", "t3"]
INVARIANT = {"m1", "m3", "m5", "t1", "t3"}


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def normalised(page: str, store: Path) -> str:
    """``page`` with what differs run to run written the same way: the store's path (as the
    page writes it) ``{store}``, the time the page was written ``{date}``; then every run of
    whitespace one space (the templates lay the tags out on their own lines)."""
    page = page.replace(escape(str(store)), "{store}")
    page = re.sub(r"written \d{4}-\d\d-\d\d \d\d:\d\d", "written {date}", page)
    return re.sub(r"\s+", " ", page).strip()


RANK_SECTION = re.compile(r"<section id='rank'>.*?</section>", re.DOTALL)
RANK_LINK = "<a href='#rank'>measure rank</a>"


def without_rank(page: str) -> str:
    """``page`` without the section of ``ml4ml measures rank`` and its link, added after
    the golden pages were recorded (``ml4ml run`` ranks the measures; test_report_rank.py
    tests that section)."""
    return RANK_SECTION.sub("", page).replace(RANK_LINK, "")


def same_page(page: str, store: Path, name: str):
    want = (PAGES / name).read_text().strip()
    got = normalised(without_rank(page), store)
    if got != want:  # the first difference, readable
        at = next(k for k, (a, b) in enumerate(zip(got + "\0", want + "\0")) if a != b)
        pytest.fail(f"{name} differs at character {at}:\n  now:    {got[at - 120:at + 120]}"
                    f"\n  golden: {want[at - 120:at + 120]}")


# ----------------------------------------------------------------------------- golden pages
def test_the_demo_report_is_the_golden_page(demo_run):
    folder = demo_run[0]
    page = (folder / "demo.zarr.report" / "index.html").read_text()
    assert len(RANK_SECTION.findall(page)) == 1 and page.count(RANK_LINK) == 1
    same_page(page, folder / "demo.zarr", "demo.html")


def test_the_underpowered_report_is_the_golden_page(demo_run, tmp_path):
    path = tmp_path / "db.zarr"
    shutil.copytree(demo_run[0] / "demo.zarr", path)
    labels = tmp_path / "seven.csv"
    labels.write_text("mid,label\nm001,0\nm002,0\nm017,1\nm018,1\nt001,0\nt013,1\nt014,1\n")
    run("label", path, "--transform", "rotation", "--from", labels, "--as", "expert")
    run("assess", path, "--transform", "rotation", "--repeats", "2", "-q")
    run("report", path, "-o", tmp_path / "report", "-q")
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Underpowered comparison" in page
    same_page(page, path, "demo-seven-expert-labels.html")


def test_the_imported_models_reports_are_the_golden_pages(tmp_path):
    path = golden.drifting_store(tmp_path, MIDS, lambda k, mid: 0.0 if mid in INVARIANT
                                 else 0.02 * (1 + 0.1 * k))
    labels = tmp_path / "labels.csv"
    labels.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS
                                              if m != "m7"))
    run("label", path, "--transform", "rotation", "--from", labels)
    run("report", path, "-o", tmp_path / "before", "-q")
    page = (tmp_path / "before" / "index.html").read_text()
    assert "No assessment yet" in page
    same_page(page, path, "imported-unassessed.html")
    run("assess", path, "--transform", "rotation", "--repeats", "4", "-q")
    run("report", path, "-o", tmp_path / "after", "-q")
    same_page((tmp_path / "after" / "index.html").read_text(), path, "imported.html")


# ----------------------------------------------------------------------------- escaping
SUITE = "<script>s\"'x"  # a suite (a group name: no '/')
MID = "<script>m\"'1"  # a model id the CLI refuses, in a store another tool wrote
RESULTS = "_<script>r\"'.npy"  # the end of a results file's name (the page names the file)
GUIDELINE = "<script>document.title='g'</script> \"invariant\" & 'flat'"


def _import(path, mid, results, act):
    """``import-legacy``'s writes for a model id it would refuse (``store.importing``): a
    store written by another tool, which the report and the labelling page must still show
    safely."""
    import numpy as np
    import xarray as xr

    from ml4ml import dims
    from ml4ml.store import groups, models, probes
    from ml4ml.store.legacy import read_legacy
    from ml4ml.store.lock import writing

    probe = read_legacy(results, act, transform="rotation")
    with writing(path, "test: a foreign writer"):
        groups.create_store(path, precision="float64")
        probes.init_probes(path, SUITE, "rotation", probe, [mid])
        models.add_models(path, xr.Dataset(
            {"holdout": ((dims.MID,), np.array([False])),
             "source": ((dims.MID,), np.array(["legacy"], dtype=object)),
             "results_file": ((dims.MID,), np.array([str(results)], dtype=object))},
            coords={dims.MID: np.array([mid], dtype=object)}))
        probes.write_probe(path, SUITE, "rotation", mid, probe)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A measured, labelled, assessed store whose path, suite, one model id and every
    model's results file hold '<script>' and quotes: (store, report page)."""
    import gzip

    import numpy as np

    folder = tmp_path_factory.mktemp("hostile") / "<script>alert('p')<" / 'script>"q"'
    folder.mkdir(parents=True)
    path = folder / "db.zarr"
    with gzip.open(golden.results("small1")) as file:
        responses = np.load(file)
    rng = np.random.default_rng(1)
    params = responses[:, 0, 4]
    for k, mid in enumerate(MIDS):
        mine = responses.copy()
        drift = 0.0 if mid in INVARIANT else 0.02 * (1 + 0.1 * k)
        mine[..., 3] = np.clip(mine[..., 3] * (1 - drift * np.abs(params))[:, None]
                               * (1 + 0.01 * rng.standard_normal(mine.shape[:2])), 0, 1)
        results = folder / f"{mid}{RESULTS}"
        np.save(results, mine)
        run("import-legacy", path, "--mid", mid, "--results", results, "--act",
            golden.act("small1"), "--suite", SUITE)
    _import(path, MID, folder / f"m2{RESULTS}", golden.act("small1"))
    run("measure", path, "-q")
    labels = folder / "labels.csv"
    labels.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS))
    run("label", path, "--transform", "rotation", "--from", labels)
    run("assess", path, "--transform", "rotation", "--repeats", "3", "-q")
    run("report", path, "-o", folder / "report", "-q")
    return path, (folder / "report" / "index.html").read_text()


def _parsed(page: str):
    """(tags, texts): every start tag with its attributes, and every text, unescaped by
    Python's HTML parser (as a browser reads them)."""
    from html.parser import HTMLParser

    class Parser(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags, self.texts = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, dict(attrs)))

        def handle_data(self, data):
            self.texts.append(data)

    parser = Parser()
    parser.feed(page)
    parser.close()
    return parser.tags, parser.texts


def test_nothing_from_the_store_reaches_the_report_unescaped(hostile):
    path, page = hostile
    for text in (str(path), SUITE, MID, "<script>alert('p')</script>", f"m1{RESULTS}"):
        assert escape(text) in page, text
        assert text not in page, text
    # one script on the page, the report's own; no tag or attribute came from the store
    assert page.count("<script") == 1 and page.count("</script>") == 1
    tags, texts = _parsed(page)
    assert [t for t, _ in tags].count("script") == 1
    assert {t for t, _ in tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "h2",
                                    "h3", "p", "code", "b", "nav", "a", "section", "div",
                                    "span", "table", "thead", "tbody", "tr", "th", "td", "dl",
                                    "dt", "dd", "img", "button", "dialog", "form", "script"}
    # the hostile id stays inside its attributes: the card's id, link and picture are it
    card = [a for t, a in tags if t == "div" and a.get("id") == MID]
    assert len(card) == 1 and "card" in card[0]["class"].split()
    links = [a for t, a in tags if t == "a" and a.get("data-mid") == MID]
    assert [a["href"] for a in links] == [f"models/full/{MID}.png"]
    assert [a["title"] for a in links] == [f"enlarge {MID}"]
    assert [a["src"] for t, a in tags if t == "img" and a.get("alt") == f"matrices of {MID}"] \
        == [f"models/{MID}.png"]
    # and every text reads as the store has it
    assert f"store {path}, suite {SUITE}, grid " in "".join(texts)
    assert MID in texts and f"imported: m2{RESULTS}" in texts
    assert escape(f"imported: m2{RESULTS}") in page
    assert (path.parent / "report" / "models" / f"{MID}.png").is_file()


def test_the_labelling_page_escapes_the_guideline_and_keeps_its_csp(hostile):
    import base64
    import hashlib
    import re

    from starlette.testclient import TestClient

    from ml4ml.labelling.app import create_app
    from ml4ml.labelling.page import CSP

    path, _ = hostile
    app = create_app(str(path), "rotation", ["ann"], suite=SUITE, guideline=GUIDELINE)
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    token = app.state.access.tokens["ann"]
    answer = client.get(f"/?token={token}")
    assert answer.status_code == 200
    page = answer.text
    assert escape(GUIDELINE) in page and GUIDELINE not in page
    assert page.count("<script") == 1 and page.count("</script>") == 1
    tags, texts = _parsed(page)
    assert GUIDELINE in texts  # shown as text, as written
    assert [t for t, _ in tags].count("script") == 1
    # the CSP header: the page's own script and style by hash, nothing inline else
    policy = answer.headers["Content-Security-Policy"]
    assert policy == CSP and "unsafe-inline" not in policy

    def digest(text):
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    script = re.search(r"<script>(.*)</script>", page, re.S).group(1)
    style = re.search(r"<style>(.*)</style>", page, re.S).group(1)
    assert f"script-src {digest(script)}'" in policy
    assert f"style-src {digest(style)}'" in policy
    # a refused request's page: the reason, escaped, the same CSP
    refused = client.get("/?token=%3Cscript%3E'x%22")
    assert refused.status_code in (401, 403)
    assert "<script" not in refused.text and "<p>" in refused.text
    assert refused.headers["Content-Security-Policy"] == CSP


# ----------------------------------------------------------------------------- packaging
def test_the_templates_ship_in_the_wheel(tmp_path):
    """A non-editable install has every template: the wheel holds each file of the
    packages' ``templates/`` folders (pyproject.toml's package data)."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    templates = sorted(str(f.relative_to(root)) for f in root.glob("ml4ml/*/templates/*"))
    assert {Path(t).name for t in templates} >= {"report.html.j2", "answer.html.j2",
                                                  "label.html.j2", "label.js", "report.js"}
    source = tmp_path / "source"  # a copy: the build leaves nothing in the checkout
    shutil.copytree(root / "ml4ml", source / "ml4ml",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("ml4ml-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert [t for t in templates if t not in shipped] == []
