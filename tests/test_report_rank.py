"""The report shows ``ml4ml measures rank`` where the store holds one: a table of the best
measures whose numbers are the stored rank's, a note when the rank is stale, and its figure
(hold-out AUC with interval bars, by family); a store without a rank has neither."""

import shutil
from html.parser import HTMLParser

import golden
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ml4ml.assess.rank_stage import read_rank
from ml4ml.cli import cli
from ml4ml.report.figures import FAMILY_COLOURS, rank_bars
from ml4ml.report.stage import RANK_TABLE_ROWS

MIDS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "t1", "t2", "t3", "t4"]
INVARIANT = {"m1", "m3", "m5", "m7", "t1", "t3"}


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


class RankSection(HTMLParser):
    """The rows of the table inside ``<section id='rank'>`` (cells as text) and the
    sources of its images."""

    def __init__(self):
        super().__init__()
        self.inside, self.rows, self.images, self.cell = False, [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("id") == "rank":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self.cell = ""
        elif self.inside and tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "section":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def section(index):
    parser = RankSection()
    parser.feed(index.read_text())
    return [row for row in parser.rows if row], parser.images


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rankreport")
    # the confidence drifts more the later the model, a variant one more: the classes
    # overlap (t3 drifts more than m2), so the measures' AUCs differ
    golden.drifting_store(folder, MIDS, lambda k, mid: 0.0015 * k if mid in INVARIANT
                          else 0.01 * (1 + 0.2 * k))
    labels = folder / "labels.csv"
    labels.write_text("mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS))
    run("label", folder / "db.zarr", "--transform", "rotation", "--from", labels)
    return folder


def test_a_ranked_store_reports_the_stored_rank_its_figure_and_when_it_is_stale(labelled,
                                                                              tmp_path):
    path = tmp_path / "db.zarr"
    shutil.copytree(labelled / "db.zarr", path)
    # before the rank: no section, no figure (the store's report is as it was)
    run("report", path, "-o", tmp_path / "plain", "-q")
    assert section(tmp_path / "plain" / "index.html") == ([], [])
    assert not (tmp_path / "plain" / "rank.png").exists()
    assert "id='rank'" not in (tmp_path / "plain" / "index.html").read_text()

    run("measures", "rank", path, "--transform", "rotation", "--repeats", "3",
        "--bootstrap", "300")
    run("report", path, "-o", tmp_path / "report", "-q")
    index = tmp_path / "report" / "index.html"
    rows, images = section(index)
    rank = read_rank(path, "rotation").sortby("rank_position")
    scored = rank.isel(score=np.flatnonzero(rank["rank_reason"].values == ""))
    assert 0 < scored.sizes["score"] < rank.sizes["score"]  # some measures unscored
    want = scored.isel(score=slice(0, RANK_TABLE_ROWS))
    assert len(rows) == want.sizes["score"] == RANK_TABLE_ROWS
    for k, row in enumerate(rows):
        position, measure, family, auc, interval, accuracy, chosen = row
        stored = want.isel(score=k)
        assert int(position) == int(stored["rank_position"])
        sign = "" if int(stored["rank_direction"]) > 0 else " (−)"
        assert measure == str(stored["score"].values) + sign
        assert family == str(stored["rank_family"].values) == "matrix"
        low, high = (float(v) for v in interval.split(" – "))
        for text, name, digits in ((auc, "rank_auc", 3), (low, "rank_auc_low", 3),
                                   (high, "rank_auc_high", 3),
                                   (accuracy, "rank_accuracy", 3), (chosen, "rank_chosen", 2)):
            assert float(text) == pytest.approx(float(stored[name]), abs=0.5 * 10 ** -digits), \
                (k, name)
    # rows that tell the numbers apart: both directions, different accuracies
    assert len({row[5] for row in rows}) > 1 and len({row[1][-3:] == "(−)" for row in rows}) == 2
    # the ranking's own order: AUC never rises down the table
    aucs = [float(row[3]) for row in rows]
    assert aucs == sorted(aucs, reverse=True)
    # the figure: in the page, on disk, a PNG whose smallest text is readable
    assert images == ["rank.png"]
    picture = Image.open(tmp_path / "report" / "rank.png")
    assert picture.format == "PNG" and float(picture.info["font_pt_min"]) >= 9
    html = index.read_text()
    assert "Stale rank" not in html and "<a href='#rank'>" not in html  # no assessment: no nav
    assert (f"{int(scored.sizes['score'])} measures scored, "
            f"{rank.sizes['score'] - scored.sizes['score']} not") in html

    # new labels: the report says the rank is stale, naming the command that redoes it
    flipped = tmp_path / "flipped.csv"
    flipped.write_text("mid,label\n" + "".join(f"{m},{int(m not in INVARIANT)}\n"
                                               for m in MIDS))
    run("label", path, "--transform", "rotation", "--from", flipped)
    run("report", path, "-o", tmp_path / "stale", "-q")
    html = (tmp_path / "stale" / "index.html").read_text()
    assert ("<b>Stale rank:</b> the labels &#x27;file&#x27; changed since the rank; run "
            f"&#x27;ml4ml measures rank {path} --transform rotation&#x27; to redo it") in html
    assert section(tmp_path / "stale" / "index.html")[0] == rows  # still shown, as stored


def test_the_rank_figure_colours_each_family_and_marks_chance(tmp_path):
    names = [f"measure_{k}" for k in range(6)]
    auc = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.4])
    families = ["response", "matrix", "matrix", "response", "matrix", "response"]
    rank_bars(tmp_path / "rank.png", names, auc, auc - 0.1, np.minimum(auc + 0.05, 1),
              families)
    pixels = np.asarray(Image.open(tmp_path / "rank.png").convert("RGB")).reshape(-1, 3)
    for family, colour in FAMILY_COLOURS.items():
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=1) == 0).sum() > 50, family
