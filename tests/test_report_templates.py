"""The report and the labelling page come from Jinja2 templates (autoescaped): the report
is the page the f-string code gave (golden pages, apart from whitespace), and nothing a
user chose (store path, model id, suite, guideline, rater) reaches either page unescaped."""

import re
import shutil
from html import escape
from pathlib import Path

import pytest
from click.testing import CliRunner

import golden
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


def same_page(page: str, store: Path, name: str):
    want = (PAGES / name).read_text().strip()
    got = normalised(page, store)
    if got != want:  # the first difference, readable
        at = next(k for k, (a, b) in enumerate(zip(got + "\0", want + "\0")) if a != b)
        pytest.fail(f"{name} differs at character {at}:\n  now:    {got[at - 120:at + 120]}"
                    f"\n  golden: {want[at - 120:at + 120]}")


# ----------------------------------------------------------------------------- golden pages
def test_the_demo_report_is_the_golden_page(demo_run):
    folder = demo_run[0]
    page = (folder / "demo.zarr.report" / "index.html").read_text()
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
