"""The labelling page: its HTTP API, tokens and aliases, two raters at once, and a real
browser on it (and on a page of another origin that tries to write)."""

import gzip
import io
import json
import re
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import browser
import golden
import numpy as np
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from tree import digest

from ml4ml.cli import cli
from ml4ml.labelling.access import Access, access_file
from ml4ml.labelling.app import create_app
from ml4ml.labelling.guard import Hosts
from ml4ml.store.labels import read_labels

MIDS = ["m1", "m2", "m3", "m4", "t1", "t2"]
BASE = "http://127.0.0.1:8765"
# a model id as a word of its own (aliases and tokens are letters and digits around it)
MID_WORD = re.compile(r"(?<![A-Za-z0-9_-])[mt][0-9]+(?![A-Za-z0-9_-])")


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


def open_app(path, raters=("ann", "bob"), **kwargs):
    app = create_app(str(path), "rotation", list(raters), **kwargs)
    return TestClient(app, base_url=BASE), app.state.access.tokens


@pytest.fixture
def served(path):
    return open_app(path)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def get(client, url, token):
    return client.get(url, headers=bearer(token))


def post(client, body, token, **headers):
    return client.post("/api/labels", json=body,
                       headers={**bearer(token), "Origin": BASE, **headers})


def walk(client, token):
    """Every alias in the rater's order (the arrows)."""
    seen = [get(client, "/api/next?any=1", token).json()["alias"]]
    for _ in range(len(MIDS) - 1):
        seen.append(get(client, f"/api/next?any=1&after={seen[-1]}", token).json()["alias"])
    return seen


def forgeries(token):
    """Tokens that are not ``token`` but start like it, or are it and more: a page that
    compares only a prefix (or ``startswith``) would let them in."""
    return [token[:-1], token[:len(token) // 2], token[:1], token + "A", token + token]


def mid_of(path, rater, alias):
    access = Access.open(str(path), [rater])
    return {a: m for m, a in access.aliases(rater, MIDS).items()}[alias]


# ------------------------------------------------------------------------------ the API
def test_next_gives_the_raters_own_seeded_order_and_resumes(served, path):
    client, tokens = served
    first = get(client, "/api/next", tokens["ann"]).json()
    assert first["progress"] == {"labelled": 0, "skipped": 0, "total": 6,
                                 "overlap": {"total": 0, "rated": 0},
                                 "text": "0 of 6 labelled"}
    alias = first["alias"]
    assert re.fullmatch(r"[a-z2-7]{8}", alias)
    assert first["images"] == {
        "matrices": f"/images/{alias}/matrices.png?token={tokens['ann']}",
        "accuracy": f"/images/{alias}/accuracy.png?token={tokens['ann']}"}
    order = walk(client, tokens["ann"])
    assert order[0] == alias and len(set(order)) == 6
    assert sorted(mid_of(path, "ann", a) for a in order) == sorted(MIDS)
    bob = walk(client, tokens["bob"])
    assert not set(bob) & set(order)  # aliases of their own
    bob_mids = [mid_of(path, "bob", a) for a in bob]
    assert sorted(bob_mids) == sorted(MIDS) and bob_mids != [mid_of(path, "ann", a)
                                                             for a in order]
    again, same = open_app(path)  # a restart: the same tokens, aliases and order
    assert same == tokens and walk(again, tokens["ann"]) == order
    other_seed, _ = open_app(path, seed=5)
    assert walk(other_seed, tokens["ann"]) != order
    # label the first two: next resumes at the third, and back goes to the second
    for a, label in zip(order[:2], (1, 0)):
        answer = post(client, {"alias": a, "label": label}, tokens["ann"])
        assert answer.status_code == 200 and answer.json()["ok"] is True
        assert answer.json()["alias"] == a and answer.json()["skipped"] is False
    resumed = get(client, "/api/next", tokens["ann"]).json()
    assert resumed["alias"] == order[2] and resumed["progress"]["text"] == "2 of 6 labelled"
    back = get(client, f"/api/next?any=1&before={order[2]}", tokens["ann"]).json()
    assert back["alias"] == order[1] and back["label"] == 0 and back["skipped"] is False
    given = get(client, "/api/labels", tokens["ann"]).json()
    assert [(g["alias"], g["label"], g["skipped"]) for g in given["labels"]] == \
        [(order[0], 1, False), (order[1], 0, False)]
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", g["time"]) for g in given["labels"])
    ds = read_labels(str(path), "rotation")
    assert ds["rating"].sel(rater="ann", mid=mid_of(path, "ann", order[0])).item() == 1
    assert np.isnat(ds["rated_at"].sel(rater="ann", mid=mid_of(path, "ann", order[2])).values)
    assert "bob" not in [str(r) for r in ds["rater"].values]


def test_a_skip_is_recorded_shown_and_asked_again_last(served, path):
    client, tokens = served
    token = tokens["ann"]
    order = walk(client, token)
    answer = post(client, {"alias": order[0], "label": None}, token)
    assert answer.status_code == 200
    assert {k: answer.json()[k] for k in ("alias", "label", "skipped")} == \
        {"alias": order[0], "label": None, "skipped": True}
    assert answer.json()["progress"]["text"] == "0 of 6 labelled, 1 skipped"
    assert post(client, {"alias": order[1], "skip": True}, token).json()["skipped"] is True
    nxt = get(client, f"/api/next?after={order[1]}", token).json()
    assert nxt["alias"] == order[2]
    back = get(client, f"/api/next?any=1&before={order[2]}", token).json()
    assert back["alias"] == order[1] and back["skipped"] is True and back["label"] is None
    ds = read_labels(str(path), "rotation")
    skipped = ds.sel(rater="ann", mid=[mid_of(path, "ann", a) for a in order[:2]])
    assert skipped["rating"].values.tolist() == [-1, -1]
    assert not np.isnat(skipped["rated_at"].values).any()  # a skip has its time
    listing = get(client, "/api/labels", token).json()["labels"]
    assert [(g["alias"], g["label"], g["skipped"]) for g in listing] == \
        [(order[0], None, True), (order[1], None, True)]
    for a in order[2:]:  # the unrated ones first, then the skipped ones again
        assert get(client, "/api/next", token).json()["alias"] == a
        post(client, {"alias": a, "label": 1}, token)
    assert get(client, "/api/next", token).json()["alias"] == order[0]
    post(client, {"alias": order[0], "label": 0}, token)
    post(client, {"alias": order[1], "label": 1}, token)
    done = get(client, "/api/next", token).json()
    assert done["done"] is True and done["alias"] is None
    assert done["progress"]["text"] == "6 of 6 labelled"


BODIES = [
    (b"{bad json", 400, "the body must be JSON"),
    (b"[1, 2]", 400, "a JSON object"),
    ({"alias": "{a}", "label": 1, "rater": "ann"}, 400, "'rater' is not taken"),
    ({"alias": "{a}", "label": 1, "rater": "bob"}, 400, "'rater' is not taken"),
    ({"mid": "m1", "label": 1}, 400, "name the model by its 'alias'"),
    ({"alias": "zzzzzzzz", "label": 1}, 404, "unknown model 'zzzzzzzz'"),
    ({"alias": "{a}", "label": 2}, 400, "must be 0 (variant), 1 (invariant) or null"),
    ({"alias": "{a}", "label": True}, 400, "must be 0"),
    ({"alias": "{a}", "label": "1"}, 400, "must be 0"),
    ({"alias": "{a}"}, 400, "missing 'label'"),
    ({"alias": "{a}", "skip": "yes"}, 400, "'skip' must be true or false"),
    ({"alias": "{a}", "skip": True, "label": 1}, 400, "'skip': true takes no label"),
    ({"label": 1}, 400, "missing 'alias'"),
]


@pytest.mark.parametrize("body, status, message", BODIES)
def test_bad_requests_are_4xx_and_change_nothing(served, path, body, status, message):
    client, tokens = served
    alias = get(client, "/api/next", tokens["ann"]).json()["alias"]
    if isinstance(body, dict):
        body = json.dumps(body).replace("{a}", alias).encode()
    answer = client.post("/api/labels", content=body,
                         headers={"Content-Type": "application/json", "Origin": BASE,
                                  **bearer(tokens["ann"])})
    assert answer.status_code == status and message in answer.json()["error"]
    assert not (path / "labels").exists() and read_labels(str(path), "rotation") is None


def test_only_an_invited_raters_token_reads_or_writes(served, path):
    client, tokens = served
    alias = get(client, "/api/next", tokens["ann"]).json()["alias"]
    image = f"/images/{alias}/matrices.png"
    for method, url in (("GET", "/"), ("GET", "/api/next"), ("GET", "/api/labels"),
                        ("POST", "/api/labels"), ("GET", image)):
        def ask(headers, query="", method=method, url=url):
            sep = "&" if "?" in url else "?"
            full = url + (sep + query if query else "")
            if method == "GET":
                return client.get(full, headers=headers)
            return client.post(full, json={"alias": alias, "label": 1},
                               headers={"Origin": BASE, **headers})

        missing = ask({})
        assert missing.status_code == 401, url
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert ask({}, "token=").status_code == 401
        assert ask({"Authorization": "Basic YW5uOmFubg=="}).status_code == 401
        assert ask(bearer(tokens["ann"] + "x")).status_code == 403, url
        for forged in forgeries(tokens["ann"]):  # a prefix, or more, of a valid token
            assert ask(bearer(forged)).status_code == 403, (url, forged)
            assert ask({}, "token=" + forged).status_code == 403, (url, forged)
        assert ask({}, "token=nope").status_code == 403, url
        assert ask(bearer(tokens["ann"]), "token=" + tokens["bob"]).status_code == 403
        assert ask({}, f"token={tokens['ann']}&rater=bob").status_code == 400, url
    # an uninvited rater's token from an earlier start of the page is not taken
    carl = Access.open(str(path), ["carl"]).tokens["carl"]
    assert get(client, "/api/next", carl).status_code == 403
    assert not (path / "labels").exists()
    # the query and the header both work
    assert client.get(f"/api/next?token={tokens['ann']}").json()["alias"] == alias
    assert client.get(f"{image}?token={tokens['ann']}").content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_raters_token_cannot_write_as_the_first(served, path):
    client, tokens = served
    ann = walk(client, tokens["ann"])
    before = digest(path / "labels")
    for body in ({"alias": ann[0], "label": 1}, {"alias": ann[0], "label": 1, "rater": "ann"}):
        assert post(client, body, tokens["bob"]).status_code in (400, 404)
    assert get(client, f"/images/{ann[0]}/matrices.png", tokens["bob"]).status_code == 404
    assert digest(path / "labels") == before == "absent"
    bob = get(client, "/api/next", tokens["bob"]).json()["alias"]
    assert post(client, {"alias": bob, "label": 0}, tokens["bob"]).status_code == 200
    ds = read_labels(str(path), "rotation")
    assert [str(r) for r in ds["rater"].values] == ["bob"]
    assert (ds["rating"].sel(rater="bob").values >= 0).sum() == 1
    assert get(client, "/api/labels", tokens["ann"]).json()["labels"] == []


CROSS_SITE = {
    "text/plain": {"Content-Type": "text/plain", "Origin": BASE},
    "form urlencoded": {"Content-Type": "application/x-www-form-urlencoded", "Origin": BASE},
    "multipart": {"Content-Type": "multipart/form-data; boundary=x", "Origin": BASE},
    "no content type": {"Origin": BASE},
    "another origin": {"Content-Type": "application/json", "Origin": "http://evil.example"},
    "another port": {"Content-Type": "application/json", "Origin": "http://127.0.0.1:9"},
    "https origin": {"Content-Type": "application/json", "Origin": "https://127.0.0.1:8765"},
    "opaque origin": {"Content-Type": "application/json", "Origin": "null"},
    "no origin": {"Content-Type": "application/json"},
    "rebound host": {"Content-Type": "application/json", "Origin": "http://evil.example:8765",
                     "Host": "evil.example:8765"},
}


@pytest.mark.parametrize("case", list(CROSS_SITE))
def test_a_cross_site_write_is_refused_even_with_the_token(served, path, case):
    client, tokens = served
    alias = get(client, "/api/next", tokens["ann"]).json()["alias"]
    assert post(client, {"alias": walk(client, tokens["ann"])[1], "label": 0},
                tokens["ann"]).status_code == 200
    before = digest(path / "labels")
    ratings = read_labels(str(path), "rotation")[["rating", "rated_at"]]
    body = json.dumps({"alias": alias, "label": 1}).encode()
    answer = client.post(f"/api/labels?token={tokens['ann']}", content=body,
                         headers=CROSS_SITE[case])
    assert answer.status_code == 403 and answer.json()["error"].startswith("refused: ")
    assert digest(path / "labels") == before
    after = read_labels(str(path), "rotation")[["rating", "rated_at"]]
    for name in ("rating", "rated_at"):
        assert after[name].values.tobytes() == ratings[name].values.tobytes()


def test_the_server_answers_its_own_host_names_only():
    loopback = Hosts("127.0.0.1")
    for good in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST", "[::1]:8765", "localhost."):
        assert loopback.allows(good), good
    for bad in ("evil.example:8765", "127.0.0.1.evil.example", "10.0.0.1:8765", "", None,
                "127.0.0.1:port", "[::1", "localhost:8765@evil"):
        assert not loopback.allows(bad), bad
    assert Hosts("::1").allows("[::1]:9") and Hosts("::1").allows("localhost")
    one = Hosts("192.0.2.7")
    assert one.allows("192.0.2.7:80") and not one.allows("localhost:80")
    import socket

    anywhere = Hosts("0.0.0.0")
    for good in ("192.0.2.7:8765", "[2001:db8::1]:8765", "localhost", "127.0.0.1",
                 socket.gethostname()):
        assert anywhere.allows(good), good
    assert not anywhere.allows("evil.example:8765")  # a rebound name


def test_every_answer_has_the_security_headers(served):
    client, tokens = served
    alias = get(client, "/api/next", tokens["ann"]).json()["alias"]
    answers = {"page": client.get(f"/?token={tokens['ann']}"),
               "next": get(client, "/api/next", tokens["ann"]),
               "labels": get(client, "/api/labels", tokens["ann"]),
               "refused": client.get("/api/next"),
               "foreign host": client.get("/", headers={"Host": "evil.example"}),
               "image": get(client, f"/images/{alias}/accuracy.png", tokens["ann"])}
    for name, answer in answers.items():
        assert answer.headers["X-Frame-Options"] == "DENY", name
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"], name
        assert answer.headers["Referrer-Policy"] == "no-referrer", name
        assert answer.headers["X-Content-Type-Options"] == "nosniff", name
        expected = "private, max-age=3600" if name == "image" else "no-store"
        assert answer.headers["Cache-Control"] == expected, name
    assert answers["foreign host"].status_code == 403
    assert answers["foreign host"].json()["error"] == \
        "refused: Host 'evil.example' is not a name of this server"
    assert "unsafe-inline" not in answers["page"].headers["Content-Security-Policy"]


def test_images_name_aliases_never_files(served):
    client, tokens = served
    alias = get(client, "/api/next", tokens["ann"]).json()["alias"]
    good = get(client, f"/images/{alias}/matrices.png", tokens["ann"])
    assert good.status_code == 200 and good.content[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in ("/images/..%2F..%2Fzarr.json/matrices.png", f"/images/{alias}/..%2Fzarr.json.png",
                "/images/../zarr.json", f"/images/{alias}/other.png", "/images/m1/matrices.png",
                "/images/%2E%2E/matrices.png"):
        answer = get(client, bad, tokens["ann"])
        assert answer.status_code == 404, bad
        assert b"zarr_format" not in answer.content
    assert get(client, "/api/next?after=m1", tokens["ann"]).status_code == 404


def test_the_page_and_its_answers_are_blind(path):
    client, tokens = open_app(path, guideline="Invariant: <b>dark</b> & flat.")
    post(client, {"alias": get(client, "/api/next", tokens["bob"]).json()["alias"],
                  "label": 1}, tokens["bob"])
    token = tokens["ann"]
    texts = {"page": client.get(f"/?token={token}").text}
    order = walk(client, token)
    post(client, {"alias": order[0], "label": 1}, token)
    texts["skip"] = post(client, {"alias": order[1], "label": None}, token).text
    texts["save"] = post(client, {"alias": order[2], "label": 0}, token).text
    for k, alias in enumerate(order):
        texts[f"next {k}"] = get(client, f"/api/next?any=1&after={alias}", token).text
        texts[f"back {k}"] = get(client, f"/api/next?any=1&before={alias}", token).text
    texts["labels"] = get(client, "/api/labels", token).text
    assert "Invariant: &lt;b&gt;dark&lt;/b&gt; &amp; flat." in texts["page"]
    for name, text in texts.items():
        words = text.replace(token, "TOKEN")
        assert MID_WORD.findall(words) == [], (name, MID_WORD.findall(words))
        for word in ("bob", "\"mid\"", "holdout", "hold-out", "recipe", "anomaly", "aug_range",
                     tokens["bob"]):
            assert word not in text, (name, word)
    assert token not in texts["page"]  # the page reads it from its own URL
    answer = json.loads(texts["next 0"])
    assert set(answer) == {"rater", "alias", "done", "position", "label", "skipped", "images",
                           "progress"}
    assert all(re.fullmatch(rf"/images/[a-z2-7]{{8}}/{k}\.png\?token={re.escape(token)}", u)
               for k, u in answer["images"].items())


def test_tokens_and_aliases_are_kept_beside_the_store_owner_only(path):
    client, tokens = open_app(path)
    file = path.parent / "db.zarr.label-ui.json"
    assert access_file(path) == file and file.is_file()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    kept = json.loads(file.read_text())
    assert kept["raters"] == tokens and len(bytes.fromhex(kept["secret"])) == 32
    assert tokens["ann"] != tokens["bob"] and min(len(t) for t in tokens.values()) >= 32
    first = walk(client, tokens["ann"])
    # a third rater joins: the others keep their tokens and aliases
    again, more = open_app(path, ["ann", "bob", "cleo"])
    assert {k: more[k] for k in ("ann", "bob")} == tokens and more["cleo"] not in tokens.values()
    assert walk(again, tokens["ann"]) == first
    assert list(path.parent.glob(".db.zarr.label-ui.json.*")) == []  # no temporary left
    # a file others may read is refused in one line; a store at a URL keeps its file locally
    file.chmod(0o644)
    result = run("label-ui", path, "--transform", "rotation", "--rater", "ann", "--port", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"error: {file}: others may read this file of the raters' tokens (mode 644) "
        f"(chmod 600 '{file}', or delete it to give every rater a new link)"]


def test_a_store_at_a_url_keeps_its_tokens_in_the_users_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    file = access_file("s3://bucket/dbs/db.zarr/")
    assert file.parent == tmp_path / "config" / "ml4ml" / "label-ui"
    assert re.fullmatch(r"db\.zarr-[0-9a-f]{12}\.json", file.name)
    assert access_file("s3://other/dbs/db.zarr") != file
    tokens = Access.open("s3://bucket/dbs/db.zarr", ["ann"]).tokens
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert json.loads(file.read_text())["raters"] == tokens


def test_the_guideline_comes_from_the_spec_or_a_default(path):
    client, tokens = open_app(path)
    page = client.get(f"/?token={tokens['ann']}").text
    default = re.search(r'<p id="guideline">(.*?)</p>', page, re.S).group(1)
    assert default.startswith("Invariant: over the whole tested range of rotation (")
    assert "accuracy stays up" in default and "variance matrices stay dark" in default
    # the store's recorded spec (its root attribute 'pipeline') with a [labels] guideline
    spec = path.parent / "spec.toml"
    spec.write_text('[labels]\nguideline = "Dark & flat: <i>invariant</i>."\n')
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"]["pipeline"] = "../spec.toml"
    (path / "zarr.json").write_text(json.dumps(root))
    client, tokens = open_app(path)
    assert '<p id="guideline">Dark &amp; flat: &lt;i&gt;invariant&lt;/i&gt;.</p>' in \
        client.get(f"/?token={tokens['ann']}").text
    spec.write_text('[labels]\nguideline = 7\n')
    result = run("label-ui", path, "--transform", "rotation", "--rater", "ann", "--port", "0")
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"error: {spec}: field 'labels.guideline': expected a text (a TOML string), got 7"]


# ----------------------------------------------------------------------- two raters at once
def test_two_raters_at_once_lose_nothing(path):
    servers = [open_app(path, (name,)) for name in ("ann", "bob")]
    errors = []

    def label_all(client, token, label):
        for alias in walk(client, token):
            answer = post(client, {"alias": alias, "label": label}, token)
            if answer.status_code != 200:
                errors.append(answer.json())

    threads = [threading.Thread(target=label_all, args=(c, t[n], v))
               for (c, t), n, v in zip(servers, ("ann", "bob"), (1, 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    ds = read_labels(str(path), "rotation")
    assert ds["rating"].sel(rater="ann").values.tolist() == [1] * 6
    assert ds["rating"].sel(rater="bob").values.tolist() == [0] * 6
    # agreement and the merged labels from the command line (the admin's side: model ids)
    result = run("label", path, "--transform", "rotation", "--agreement")
    assert result.exit_code == 0, result.output
    assert "ann: 6 invariant, 0 variant, 0 skipped, 0 not rated" in result.output
    assert re.search(r"Cohen's kappa (ann / bob|bob / ann): 0.000 on the 6 model\(s\) both "
                     r"labelled", result.output)
    assert "Krippendorff's alpha" in result.output
    shown = run("label", path, "--transform", "rotation", "--show").output
    # the table shows model ids; the raters' columns come in the order they first wrote
    header, *rows = [line.split() for line in shown.splitlines() if line.strip()]
    columns = {name: k for k, name in enumerate(header)}
    table = {row[0]: row for row in rows if row[0] in MIDS}
    assert sorted(table) == sorted(MIDS), shown
    assert {(r[columns["rater:ann"]], r[columns["rater:bob"]]) for r in table.values()} == \
        {("1", "0")}, shown
    result = run("label", path, "--transform", "rotation", "--merge", "majority")
    assert "0 model(s) labelled (0 invariant), 6 tie(s): m1, m2, m3, m4, t1, t2" in \
        result.output
    assert read_labels(str(path), "rotation").attrs["current_source"] == "expert"


# ---------------------------------------------------------------------- the command line
def serve(path, *args, raters=("ann", "bob")):
    """Start 'ml4ml label-ui'; (process, {rater: private URL}, stderr lines before them)."""
    command = [sys.executable, "-m", "ml4ml", "label-ui", str(path), "--transform",
               "rotation", "--port", "0", *args]
    for rater in raters:
        command += ["--rater", rater]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    head = process.stdout.readline()
    assert head.startswith("labelling rotation: one private URL per rater"), \
        (head, process.stderr.read() if process.poll() is not None else "")
    urls = {}
    for _ in raters:
        name, url = process.stdout.readline().strip().split(": ", 1)
        urls[name] = url
    return process, urls


def stop(process):
    process.terminate()
    process.wait(10)


def fetch(url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_the_command_prints_one_private_url_per_rater_and_keeps_them(path):
    process, urls = serve(path)
    try:
        tokens = json.loads((path.parent / "db.zarr.label-ui.json").read_text())["raters"]
        port = re.match(r"http://127\.0\.0\.1:(\d+)/\?token=", urls["ann"]).group(1)
        assert urls == {r: f"http://127.0.0.1:{port}/?token={tokens[r]}" for r in tokens}
        base = f"http://127.0.0.1:{port}"
        status, answer = fetch(f"{base}/api/next?token={tokens['ann']}")
        assert status == 200 and re.fullmatch(r"[a-z2-7]{8}", answer["alias"])
        assert fetch(f"{base}/api/next")[0] == 401
        assert fetch(f"{base}/api/next?token=wrong")[0] == 403
        for forged in forgeries(tokens["ann"]):  # a prefix, or more, of a valid token
            assert fetch(f"{base}/api/next?token={forged}")[0] == 403, forged
            assert fetch(f"{base}/api/next", headers=bearer(forged))[0] == 403, forged
            assert fetch(f"{base}/api/labels", json.dumps({"alias": answer["alias"],
                                                           "label": 1}).encode(),
                         {"Content-Type": "application/json", "Origin": base,
                          **bearer(forged)})[0] == 403, forged
        body = json.dumps({"alias": answer["alias"], "label": 1}).encode()
        own = {"Content-Type": "application/json", "Origin": base}
        assert fetch(f"{base}/api/labels?token={tokens['bob']}", body, own)[0] == 404
        assert fetch(f"{base}/api/labels?token={tokens['ann']}", body,
                     {**own, "Origin": "http://evil.example"})[0] == 403
        assert fetch(f"{base}/api/labels?token={tokens['ann']}", body,
                     {**own, "Content-Type": "text/plain"})[0] == 403
        assert not (path / "labels").exists()
        status, saved = fetch(f"{base}/api/labels", body, {**own, **bearer(tokens["ann"])})
        assert status == 200 and saved["label"] == 1
    finally:
        stop(process)
    again, urls_again = serve(path)  # a restart: the same links
    stop(again)
    assert {r: u.split("?", 1)[1] for r, u in urls_again.items()} == \
        {r: u.split("?", 1)[1] for r, u in urls.items()}


def test_a_network_host_warns_that_the_traffic_is_plain_http(path):
    process, urls = serve(path, "--host", "0.0.0.0", raters=("ann",))
    try:
        warning = process.stderr.readline()
        assert warning.startswith("warning: serving on 0.0.0.0, beyond this machine, over "
                                  "plain HTTP: anyone on the network path can read the "
                                  "raters' tokens")
        port = re.search(r":(\d+)/\?token=", urls["ann"]).group(1)
        token = urls["ann"].split("token=")[1]
        assert fetch(f"http://127.0.0.1:{port}/api/next?token={token}")[0] == 200
        assert fetch(f"http://127.0.0.1:{port}/api/next?token={token}",
                     headers={"Host": "evil.example"})[0] == 403
    finally:
        stop(process)


@pytest.mark.parametrize("args, line", [
    (("--rater", "a b"), "error: field '--rater': rater name 'a b' must be 1-64 letters, "
                         "digits, '.', '_' or '-'"),
    (("--rater", "ann", "--rater", "ann"), "error: field '--rater': rater 'ann' is given "
                                           "twice (name each rater once)"),
    (("--rater", "ann", "--overlap", "7"),
     "error: field '--overlap': --overlap must be a whole number from 0 to 6 (the models the "
     "page shows); got 7"),
    (("--rater", "ann", "--guideline", "absent.txt"),
     "error: absent.txt: field '--guideline': cannot read the guideline: No such file or "
     "directory"),
])
def test_bad_raters_or_guideline_are_one_line(path, args, line):
    result = run("label-ui", path, "--transform", "rotation", "--port", "0", *args)
    assert result.exit_code == 1 and result.output.strip().splitlines() == [line]
    assert not (path.parent / "db.zarr.label-ui.json").exists()


def test_label_ui_binds_to_this_machine_only_by_default():
    result = run("label-ui", "--help")
    flat = " ".join(result.output.split())
    assert "--host TEXT" in flat and "[default: 127.0.0.1]" in flat
    assert "--order [seeded|active]" in flat


# ------------------------------------------------------------------------------- Chromium
def test_a_rater_labels_and_skips_with_the_keyboard_in_chromium(path, tmp_path):
    guideline = tmp_path / "guideline.txt"
    text = "Invariant <b>means</b> dark matrices & <script>document.title='x'</script>."
    guideline.write_text(text)
    process, urls = serve(path, "--guideline", guideline, "--overlap", "2")
    try:
        with browser.page() as page:
            page.goto(urls["ann"])
            page.wait_for_selector("body[data-alias]", state="attached")  # no eval: the CSP
            assert page.inner_text("#overlap") == " \u00b7 shared with the other raters: 0 of 2 " \
                                                  "rated"
            assert page.inner_text("#guideline") == text
            assert page.query_selector("#guideline b") is None
            assert page.title() == "ml4ml: label models"
            seen = []
            for key, said in (("i", "saved {} invariant"), ("v", "saved {} variant"),
                              ("s", "skipped {}"), ("i", "saved {} invariant")):
                alias = page.evaluate("document.body.dataset.alias")
                seen.append(alias)
                saved = int(page.evaluate("document.body.dataset.saved || 0"))
                page.keyboard.press(key)
                page.wait_for_selector(f"body[data-saved='{saved + 1}']:not([data-alias="
                                       f"'{alias}'])", state="attached")
                assert page.inner_text("#status") == said.format(alias)
            assert page.inner_text("#progress") == "3 of 6 labelled, 1 skipped"
            assert page.inner_text("#overlap") == " \u00b7 shared with the other raters: 2 of 2 " \
                                                  "rated"
            page.reload()
            page.wait_for_selector("body[data-alias]", state="attached")
            assert page.inner_text("#progress") == "3 of 6 labelled, 1 skipped"
            assert page.evaluate("document.body.dataset.alias") not in seen  # resumes after
            for _ in range(2):  # back to the skipped one: it says so
                alias = page.evaluate("document.body.dataset.alias")
                page.keyboard.press("ArrowLeft")
                page.wait_for_selector(f"body:not([data-alias='{alias}'])", state="attached")
            assert page.evaluate("document.body.dataset.alias") == seen[2]
            assert page.inner_text("#given") == "you skipped it"
            assert page.evaluate(IMAGE_SHOWN) > 0
            page.click("#learning summary")  # the learning curve: 3 labels, no estimate yet
            page.wait_for_selector("body[data-curve-labelled='3']", state="attached")
            note = page.inner_text("#curve-note")
            assert note.startswith("no estimate yet (it needs 10 labels, 2 of each kind, 2 "
                                   "random picks). 3 of your 3 labels are random picks. "
                                   "Line: accuracy on the models not yet labelled"), note
            assert "accuracy, models not labelled" in page.text_content("#curve")
            assert page.inner_text("#order") == (
                "Order: first the 2 models every rater is shown (in your own order), so that "
                "the raters' agreement can be measured; then a random order of your own.")
            assert page.inner_text("#counted") == (
                "Counted: the 6 model(s) measured for rotation (suite legacy), the models "
                "this page can show.")
            html = page.content()
            assert MID_WORD.findall(html.replace(urls["ann"].split("token=")[1], "")) == []
            shot = tmp_path / "label-ui.png"
            page.screenshot(path=str(shot))
        browser.assert_not_blank(shot)
        ds = read_labels(str(path), "rotation")
        mids = [mid_of(path, "ann", a) for a in seen]
        assert ds["rating"].sel(rater="ann", mid=mids).values.tolist() == [1, 0, -1, 1]
        assert (ds["rating"].sel(rater="ann").values >= 0).sum() == 3
        times = ds["rated_at"].sel(rater="ann", mid=mids).values
        assert not np.isnat(times).any() and (np.diff(times) >= np.timedelta64(0)).all()
    finally:
        stop(process)


IMAGE_SHOWN = """new Promise((done) => {
  const image = document.getElementById("matrices");
  if (image.complete) done(image.naturalWidth);
  else image.addEventListener("load", () => done(image.naturalWidth));
})"""

ATTACK = """<!DOCTYPE html><html><body>
<form id="plain" method="POST" enctype="text/plain" action="__URL__">
<input name='{"alias": "__ALIAS__", "label": 1, "x": "' value='"}'></form>
<form id="urlencoded" method="POST" action="__URL__">
<input name="alias" value="__ALIAS__"><input name="label" value="1"></form>
<script>
async function attack() {
  const body = JSON.stringify({alias: "__ALIAS__", label: 1});
  const tries = [
    fetch("__URL__", {method: "POST", mode: "no-cors", body: body,
                      headers: {"Content-Type": "text/plain"}}),
    fetch("__URL__", {method: "POST", mode: "no-cors", body: body}),
    fetch("__URL__", {method: "POST", mode: "cors", body: body,
                      headers: {"Content-Type": "application/json"}}),
    fetch("__URL__", {method: "POST", mode: "cors", body: body, credentials: "include",
                      headers: {"Content-Type": "application/json",
                                "Authorization": "Bearer __TOKEN__"}}),
  ];
  const results = await Promise.allSettled(tries);
  document.body.dataset.done = JSON.stringify(results.map(r => r.status));
}
attack();
</script></body></html>"""


def test_a_page_of_another_origin_cannot_write_in_chromium(path, tmp_path):
    """Even knowing a rater's token and alias, a page served elsewhere that posts with a
    form (text/plain, urlencoded) or fetch (no-cors, cors) stores nothing."""
    import functools
    import http.server

    process, urls = serve(path, raters=("ann",))
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        base, token = urls["ann"].split("/?token=")
        alias = fetch(f"{base}/api/next?token={token}")[1]["alias"]
        own = {"Content-Type": "application/json", "Origin": base, **bearer(token)}
        other = fetch(f"{base}/api/next?any=1&after={alias}&token={token}")[1]["alias"]
        assert fetch(f"{base}/api/labels", json.dumps({"alias": other, "label": 0}).encode(),
                     own)[0] == 200  # one real label, to stay byte-identical
        before = digest(path / "labels")
        ratings = read_labels(str(path), "rotation")[["rating", "rated_at"]].load()
        target = f"{base}/api/labels?token={token}"
        (site / "attack.html").write_text(ATTACK.replace("__URL__", target)
                                          .replace("__ALIAS__", alias)
                                          .replace("__TOKEN__", token))
        attacker = f"http://localhost:{evil.server_address[1]}/attack.html"
        with browser.page() as page:
            page.goto(attacker)
            page.wait_for_selector("body[data-done]", state="attached")
            assert json.loads(page.evaluate("document.body.dataset.done")) == \
                ["fulfilled", "fulfilled", "rejected", "rejected"]
            for form in ("plain", "urlencoded"):
                page.goto(attacker)
                with page.expect_response(lambda r: r.url == target) as answer:
                    page.evaluate(f"document.getElementById('{form}').submit()")
                assert answer.value.status == 403, form
                page.wait_for_url(target)
                assert "refused: a write must be sent as Content-Type: application/json" in \
                    page.inner_text("body")
        assert digest(path / "labels") == before
        after = read_labels(str(path), "rotation")[["rating", "rated_at"]]
        for name in ("rating", "rated_at"):
            assert after[name].values.tobytes() == ratings[name].values.tobytes()
        assert (after["rating"].values >= 0).sum() == 1
    finally:
        evil.shutdown()
        stop(process)
