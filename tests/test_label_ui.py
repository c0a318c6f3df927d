"""The labelling page: its HTTP API, two raters at once, and a real browser on it."""

import gzip
import io
import json
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import browser
import golden
from ml4ml.cli import cli
from ml4ml.labelling.app import create_app
from ml4ml.store.labels import read_labels

MIDS = ["m1", "m2", "m3", "m4", "t1", "t2"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui")
    results = np.load(io.BytesIO(gzip.open(golden.results("small2")).read()))
    path = folder / "db.zarr"
    for k, mid in enumerate(MIDS):
        mine = results.copy()
        mine[..., 3] *= 1 - 0.01 * k
        np.save(folder / f"{mid}.npy", mine)
        assert run("import-legacy", path, "--mid", mid, "--results", folder / f"{mid}.npy",
                   "--act", golden.act("small2")).exit_code == 0
    assert run("measure", path, "-q").exit_code == 0
    return path


@pytest.fixture
def path(measured, tmp_path):
    import shutil

    shutil.copytree(measured, tmp_path / "db.zarr")
    return tmp_path / "db.zarr"


@pytest.fixture
def client(path):
    return TestClient(create_app(str(path), "rotation", "ann"))


def test_next_gives_the_raters_own_seeded_order_and_resumes(client, path):
    first = client.get("/api/next?rater=ann").json()
    assert first["progress"] == {"labelled": 0, "total": 6, "text": "0 of 6 labelled"}
    assert first["images"] == {"matrices": f"/images/{first['mid']}/matrices.png",
                               "accuracy": f"/images/{first['mid']}/accuracy.png"}
    order = [first["mid"]]
    for _ in range(5):
        order.append(client.get(f"/api/next?rater=ann&any=1&after={order[-1]}").json()["mid"])
    assert sorted(order) == sorted(MIDS)
    bob = [client.get("/api/next?rater=bob").json()["mid"]]
    for _ in range(5):
        bob.append(client.get(f"/api/next?rater=bob&any=1&after={bob[-1]}").json()["mid"])
    assert sorted(bob) == sorted(MIDS) and bob != order  # each rater's own order
    again = TestClient(create_app(str(path), "rotation", "ann"))  # the same seed: the same
    assert again.get("/api/next?rater=ann").json()["mid"] == order[0]
    other_seed = TestClient(create_app(str(path), "rotation", "ann", seed=5))
    other = [other_seed.get("/api/next?rater=ann").json()["mid"]]
    for _ in range(5):
        other.append(other_seed.get(f"/api/next?rater=ann&any=1&after={other[-1]}")
                     .json()["mid"])
    assert other != order
    # label the first two: next resumes at the third, and back goes to the second
    for mid, label in zip(order[:2], (1, 0)):
        answer = client.post("/api/labels", json={"mid": mid, "label": label, "rater": "ann"})
        assert answer.status_code == 200 and answer.json()["ok"] is True
    resumed = client.get("/api/next?rater=ann").json()
    assert resumed["mid"] == order[2] and resumed["progress"]["text"] == "2 of 6 labelled"
    back = client.get(f"/api/next?rater=ann&any=1&before={order[2]}").json()
    assert back["mid"] == order[1] and back["label"] == 0
    given = client.get("/api/labels?rater=ann").json()
    assert {(g["mid"], g["label"]) for g in given["labels"]} == {(order[0], 1), (order[1], 0)}
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", g["time"]) for g in given["labels"])
    ds = read_labels(str(path), "rotation")
    assert ds["rating"].sel(rater="ann", mid=order[0]).item() == 1
    assert np.isnat(ds["rated_at"].sel(rater="ann", mid=order[2]).values)


@pytest.mark.parametrize("body, status, message", [
    (b"{bad json", 400, "the body must be JSON"),
    (b"[1, 2]", 400, "a JSON object"),
    (json.dumps({"mid": "m1", "label": 1}).encode(), 400, "missing 'rater'"),
    (json.dumps({"mid": "m1", "label": 1, "rater": "a b"}).encode(), 400, "'rater' must be"),
    (json.dumps({"mid": "m9", "label": 1, "rater": "ann"}).encode(), 404, "unknown model 'm9'"),
    (json.dumps({"mid": "m1", "label": 2, "rater": "ann"}).encode(), 400, "must be 0"),
    (json.dumps({"mid": "m1", "label": True, "rater": "ann"}).encode(), 400, "must be 0"),
    (json.dumps({"mid": "m1", "label": "1", "rater": "ann"}).encode(), 400, "must be 0"),
    (json.dumps({"label": 1, "rater": "ann"}).encode(), 400, "missing 'mid'"),
])
def test_bad_requests_are_4xx_and_change_nothing(client, path, body, status, message):
    before = (path / "labels").exists()
    answer = client.post("/api/labels", content=body,
                         headers={"content-type": "application/json"})
    assert answer.status_code == status and message in answer.json()["error"]
    assert (path / "labels").exists() == before
    assert read_labels(str(path), "rotation") is None


def test_reads_need_a_rater_and_images_name_models_never_files(client):
    assert client.get("/api/next").status_code == 400
    assert "missing 'rater'" in client.get("/api/labels").json()["error"]
    assert client.get("/api/next?rater=ann&after=nope").status_code == 404
    good = client.get("/images/m1/matrices.png")
    assert good.status_code == 200 and good.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/images/m1/accuracy.png").content[:4] == b"\x89PNG"
    for bad in ("/images/..%2F..%2Fzarr.json/matrices.png", "/images/m1/..%2Fzarr.json.png",
                "/images/../zarr.json", "/images/m1/other.png", "/images/m9/matrices.png",
                "/images/%2E%2E/matrices.png"):
        answer = client.get(bad)
        assert answer.status_code == 404, bad
        assert b"zarr_format" not in answer.content


def test_the_page_is_blind_to_recipes_and_other_raters(client, path):
    client.post("/api/labels", json={"mid": "m1", "label": 1, "rater": "bob"})
    page = client.get("/").text
    answer = client.get("/api/next?rater=ann").json()
    for text in (page, json.dumps(answer)):
        for word in ("bob", "anomaly", "aug_range", "recipe", "holdout", "invariant\": "):
            assert word not in text, word
    assert client.get("/api/labels?rater=ann").json()["labels"] == []


def test_two_raters_at_once_lose_nothing(path):
    servers = [TestClient(create_app(str(path), "rotation", name)) for name in ("ann", "bob")]
    errors = []

    def label_all(client, name, label):
        for mid in MIDS:
            answer = client.post("/api/labels", json={"mid": mid, "label": label,
                                                      "rater": name})
            if answer.status_code != 200:
                errors.append(answer.json())

    threads = [threading.Thread(target=label_all, args=(c, n, v))
               for c, n, v in zip(servers, ("ann", "bob"), (1, 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    ds = read_labels(str(path), "rotation")
    assert ds["rating"].sel(rater="ann").values.tolist() == [1] * 6
    assert ds["rating"].sel(rater="bob").values.tolist() == [0] * 6
    # agreement and the merged labels from the command line
    result = run("label", path, "--transform", "rotation", "--agreement")
    assert result.exit_code == 0, result.output
    assert "ann: 6 invariant, 0 variant, 0 unlabelled" in result.output
    assert re.search(r"Cohen's kappa (ann / bob|bob / ann): ", result.output)
    assert "Krippendorff's alpha" in \
        result.output
    result = run("label", path, "--transform", "rotation", "--merge", "majority")
    assert "0 model(s) labelled (0 invariant), 6 tie(s): m1, m2, m3, m4, t1, t2" in \
        result.output
    assert read_labels(str(path), "rotation").attrs["current_source"] == "expert"


def serve(path, rater):
    process = subprocess.Popen([sys.executable, "-m", "ml4ml", "label-ui", str(path),
                                "--transform", "rotation", "--rater", rater, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, (line, process.stderr.read() if process.poll() is not None else "")
    return process, f"http://127.0.0.1:{match.group(1)}/"


def test_a_rater_labels_three_models_with_the_keyboard_in_chromium(path, tmp_path):
    process, url = serve(path, "ann")
    try:
        with browser.page() as page:
            page.goto(url)
            page.wait_for_function("document.body.dataset.mid !== undefined")
            seen = []
            for key in ("i", "v", "i"):
                mid = page.evaluate("document.body.dataset.mid")
                seen.append(mid)
                saved = int(page.evaluate("document.body.dataset.saved || 0"))
                page.keyboard.press(key)
                page.wait_for_function(f"parseInt(document.body.dataset.saved || 0) > {saved}"
                                       f" && document.body.dataset.mid !== '{mid}'")
            assert page.inner_text("#progress") == "3 of 6 labelled"
            page.reload()
            page.wait_for_function("document.body.dataset.mid !== undefined")
            assert page.inner_text("#progress") == "3 of 6 labelled"
            assert page.evaluate("document.body.dataset.mid") not in seen  # resumes after
            page.keyboard.press("ArrowLeft")
            page.wait_for_timeout(300)
            page.wait_for_function("document.getElementById('matrices').complete")
            shot = tmp_path / "label-ui.png"
            page.screenshot(path=str(shot))
        browser.assert_not_blank(shot)
        ds = read_labels(str(path), "rotation")
        ratings = dict(zip(ds["mid"].values.tolist(), ds["rating"].sel(rater="ann").values))
        assert [int(ratings[m]) for m in seen] == [1, 0, 1]
        assert sum(int(v) >= 0 for v in ratings.values()) == 3
        times = ds["rated_at"].sel(rater="ann", mid=seen).values
        assert not np.isnat(times).any() and (np.diff(times) >= np.timedelta64(0)).all()
    finally:
        process.terminate()
        process.wait(10)


def test_label_ui_binds_to_this_machine_only_by_default():
    result = run("label-ui", "--help")
    assert "--host TEXT" in result.output and "[default: 127.0.0.1]" in result.output
