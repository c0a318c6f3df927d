"""Raters over HTTP: the shared overlap and the agreement on it, the models every count
counts (the page, 'label --show', '--agreement', the store), how each model was picked
(recorded crash-safely, read from stores written before), and where /api/next goes on."""

import gzip
import io
import json
import re
import subprocess
import sys

import golden
import numpy as np
from test_label_ui import (MIDS, bearer, fetch, get, measured, mid_of,  # noqa: F401
                           open_app, path, post, run, serve, served, stop, walk)

from ml4ml.store.labels import read_labels


def test_next_after_a_model_goes_on_after_it_in_the_raters_order(served, path):
    """The page asks /api/next?after=ALIAS after every label: the first unrated model
    after ALIAS in the rater's order (wrapping), not the first unrated of all, so a rater
    who stepped ahead with the arrows goes on from there."""
    client, tokens = served
    token = tokens["ann"]
    order = walk(client, token)
    assert get(client, f"/api/next?after={order[2]}", token).json()["alias"] == order[3]
    assert post(client, {"alias": order[3], "label": 1}, token).status_code == 200
    assert get(client, f"/api/next?after={order[3]}", token).json()["alias"] == order[4]
    assert get(client, f"/api/next?after={order[5]}", token).json()["alias"] == order[0]
    assert get(client, "/api/next", token).json()["alias"] == order[0]  # no after: the first
    for alias in order[4:]:
        post(client, {"alias": alias, "label": 0}, token)
    # order[3:] rated: after order[4] the next unrated wraps round to order[0]; after
    # order[0] it is order[1], the models skipped over in between
    assert get(client, f"/api/next?after={order[4]}", token).json()["alias"] == order[0]
    assert get(client, f"/api/next?after={order[0]}", token).json()["alias"] == order[1]


def test_the_store_records_how_each_model_was_picked(served, path):
    """pick (rater, mid): the kind of the model /api/next offered ('seeded'), 'browsed'
    for a model reached with the arrows and rated, kept from the first rating on; after a
    restart the order's own pick is recognised without a new /api/next."""
    from ml4ml.store.labels import PICKS, pick_names

    client, tokens = served
    token = tokens["ann"]
    order = walk(client, token)
    assert get(client, "/api/next", token).json()["alias"] == order[0]
    post(client, {"alias": order[0], "label": 1}, token)  # the one offered
    post(client, {"alias": order[2], "label": None}, token)  # stepped to with the arrows
    post(client, {"alias": order[2], "label": 0}, token)  # labelled later: still browsed
    again, _ = open_app(path)  # a restart: nothing offered yet in this process
    post(again, {"alias": order[1], "label": 0}, token)  # what the order offers now
    ds = read_labels(str(path), "rotation")
    assert ds["pick"].attrs["flag_meanings"].split() == list(PICKS)
    assert ds["pick"].attrs["flag_values"] == list(PICKS.values())
    kinds = pick_names(ds["pick"].sel(rater="ann").values)
    by_alias = {a: kinds[list(ds["mid"].values).index(mid_of(path, "ann", a))] for a in order}
    assert [by_alias[a] for a in order] == ["seeded", "seeded", "browsed", "", "", ""]
    assert ds["rating"].sel(rater="ann", mid=mid_of(path, "ann", order[2])).item() == 0


RATE = """
import json, os, shutil, sys
from ml4ml import store
from ml4ml.store.backend import writes_done
from ml4ml.store.labels import write_rating

base, folder, rater, mid, label, pick = sys.argv[1:7]


def child(path, fault):
    # a forked child: rate once (dying after write 'fault' if given); 0, or 1 on an error
    try:
        if fault:
            os.environ["ML4ML_FAULT_AFTER_WRITES"] = str(fault)
        with store.writing(path, "test"):
            write_rating(path, "rotation", rater, mid, int(label), pick=pick)
        with open(f"{path}.writes", "w") as out:
            out.write(str(writes_done()))
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def fork(path, fault=0):
    pid = os.fork()
    if pid == 0:
        child(path, fault)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# nothing touches a store in this process: each child forks from a clean one
shutil.copytree(base, f"{folder}/count.zarr")
assert fork(f"{folder}/count.zarr") == 0
writes = int(open(f"{folder}/count.zarr.writes").read())
report = {"writes": writes, "crashed": [], "rerun": []}
for k in range(1, writes + 1):
    copy = f"{folder}/k{k}.zarr"
    shutil.copytree(base, copy)
    report["crashed"].append(fork(copy, k))
    report["rerun"].append(fork(copy))
print(json.dumps(report))
"""


def old_layout(path):
    """The labels group as written before 'pick' existed: ann and bob rated one model
    each, and no pick array."""
    from ml4ml import store
    from ml4ml.store.labels import write_rating
    from ml4ml.store.layout import begin, commit

    with store.writing(str(path), "test"):
        write_rating(str(path), "rotation", "ann", "m1", 1)
        write_rating(str(path), "rotation", "bob", "m2", 0)
        group = store.zarr_group(str(path), "labels/rotation")
        begin(str(path), "labels/rotation")
        del group["pick"]
        commit(str(path), "labels/rotation")


def test_ratings_from_before_picks_were_recorded_read_and_grow_the_pick_array(path):
    """A labels group without 'pick' (an older ml4ml) reads as every pick unrecorded;
    the next rating adds the array (one committed change): the old entries unrecorded,
    the new one recorded; store check stays ok."""
    import xarray as xr

    from ml4ml.store.labels import pick_names, write_rating

    old_layout(path)
    assert "pick" not in xr.open_zarr(path, group="labels/rotation")
    ds = read_labels(str(path), "rotation")
    assert (ds["pick"].values == -1).all() and ds["pick"].dims == ("rater", "mid")
    from ml4ml import store

    with store.writing(str(path), "test"):
        write_rating(str(path), "rotation", "ann", "m3", 0, pick="random")
        write_rating(str(path), "rotation", "cleo", "m4", 1, pick="seeded")
    plain = xr.open_zarr(path, group="labels/rotation").load()
    kinds = {r: dict(zip(plain["mid"].values, pick_names(plain["pick"].sel(rater=r).values)))
             for r in ("ann", "bob", "cleo")}
    assert (kinds["ann"]["m1"], kinds["ann"]["m3"], kinds["bob"]["m2"], kinds["cleo"]["m4"]) \
        == ("", "random", "", "seeded")
    assert plain["pick"].attrs["flag_meanings"].split()[:4] == ["overlap", "start", "random",
                                                                "seeded"]
    assert run("store", "check", path).output == f"{path}: ok\n"


def test_a_crash_at_any_write_of_a_rating_loses_no_pick(path, tmp_path):
    """Kill the write of a rating (on a group from before picks, so the pick array is
    added first) after each of its store writes; the same write again then records the
    label with its pick, every other rating as it was, and store check is ok."""
    old_layout(path)
    script = tmp_path / "rate.py"
    script.write_text(RATE)
    before = read_labels(str(path), "rotation")
    done = subprocess.run([sys.executable, str(script), str(path), str(tmp_path), "ann", "m3",
                           "0", "random"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    writes = report["writes"]
    assert writes >= 6  # the new array, its commit, the rating's three arrays
    assert report["crashed"] == [-9] * writes and report["rerun"] == [0] * writes, report
    for k in range(1, writes + 1):
        copy = tmp_path / f"k{k}.zarr"
        ds = read_labels(str(copy), "rotation")
        at = {"rater": "ann", "mid": "m3"}
        assert (ds["rating"].sel(at).item(), int(ds["pick"].sel(at).item())) == (0, 3), k
        others = ds["mid"] != "m3"
        for name in ("rating", "rated_at"):
            assert ds[name].where(others).equals(before[name].where(others)), (k, name)
        assert (ds["pick"].where(others, -1).values == -1).all(), k
        assert run("store", "check", copy).output == f"{copy}: ok\n", k


def test_the_page_label_show_and_the_store_count_the_same_models(path, tmp_path):
    """Two models added after the measure pass are in the store (models table, labels
    group) but not measured: the page cannot show them, and neither it, 'label --show'
    nor 'label --agreement' counts them; all three say which set they count."""
    results = np.load(io.BytesIO(gzip.open(golden.results("small2")).read()))
    np.save(tmp_path / "late.npy", results)
    for mid in ("m7", "m8"):
        assert run("import-legacy", path, "--mid", mid, "--results", tmp_path / "late.npy",
                   "--act", golden.act("small2")).exit_code == 0
    client, tokens = open_app(path)
    order = walk(client, tokens["ann"])
    for alias, label in zip(order, (1, 0, None, 1)):
        post(client, {"alias": alias, "label": label}, tokens["ann"])
    progress = get(client, "/api/next", tokens["ann"]).json()["progress"]
    assert (progress["labelled"], progress["skipped"], progress["total"]) == (3, 1, 6)
    assert "Counted: the 6 model(s) measured for rotation (suite " in \
        client.get(f"/?token={tokens['ann']}").text
    # the store: a row for every model of the table, ratings on the measured ones only
    ds = read_labels(str(path), "rotation")
    assert sorted(ds["mid"].values) == sorted(MIDS + ["m7", "m8"])
    rated = ds.sel(rater="ann", mid=MIDS)
    skipped = (rated["rating"] == -1) & rated["rated_at"].notnull()
    store_counts = (int((rated["rating"] >= 0).sum()), int(skipped.sum()), rated.sizes["mid"])
    assert store_counts == (3, 1, 6)
    shown = run("label", path, "--transform", "rotation", "--show").output.splitlines()
    header = shown[0].split()
    assert header[-1] == "measured"
    marks = {line.split()[0]: line.split()[-1] for line in shown[1:9]}
    assert marks == {**{m: "yes" for m in MIDS}, "m7": "no", "m8": "no"}
    assert sorted(line.split()[header.index("rater:ann")] for line in shown[1:9]) == \
        sorted(["1", "0", "s", "1", "-", "-", "-", "-"])
    assert shown[9] == ("(* current source: none; 1 invariant, 0 variant, s skipped, - unknown "
                        "or not rated)")
    assert re.fullmatch(r"ratings counted over the 6 model\(s\) measured for rotation \(suite "
                        r"\S+\), the models the labelling page shows:", shown[10])
    assert shown[11] == "  ann: 3 of 6 labelled (2 invariant, 1 variant), 1 skipped, 2 not rated"
    assert shown[12] == ("2 more model(s) in the store are not measured for rotation "
                         "(measured: no): not on the page, not counted: m7, m8")
    agreement = run("label", path, "--transform", "rotation", "--agreement").output
    assert "counted over the 6 model(s) measured for rotation" in agreement
    assert "  ann: 2 invariant, 1 variant, 1 skipped, 2 not rated" in agreement


def test_two_raters_are_asked_the_shared_overlap_first_and_agree_on_it(path):
    """'label-ui --overlap 4' over HTTP: both raters are asked the same 4 models first,
    each in their own order, then the rest in their own seeded order; 'label
    --agreement' reports Cohen's kappa on the models both labelled (as sklearn computes
    it), how many of them are the shared overlap, and the skips."""
    from sklearn.metrics import cohen_kappa_score

    from ml4ml.labelling.order import overlap_models

    shared = overlap_models(MIDS, 4, seed=0)
    # ann labels the overlap and one more; bob labels three of it, skips one, one more
    plan = {"ann": dict(zip(shared, (1, 0, 1, 1))), "bob": dict(zip(shared, (1, 0, 0, None)))}
    extra = {"ann": 0, "bob": 1}
    process, urls = serve(path, "--overlap", "4")
    asked = {}
    try:
        for rater, url in urls.items():
            base, token = url.split("/?token=")
            own = {"Content-Type": "application/json", "Origin": base, **bearer(token)}
            seen, after = [], ""
            for k in range(5):
                status, answer = fetch(f"{base}/api/next?token={token}{after}")
                assert status == 200, answer
                assert answer["progress"]["overlap"] == {"total": 4, "rated": min(k, 4)}
                mid = mid_of(path, rater, answer["alias"])
                seen.append(mid)
                label = plan[rater][mid] if k < 4 else extra[rater]
                assert fetch(f"{base}/api/labels", json.dumps(
                    {"alias": answer["alias"], "label": label}).encode(), own)[0] == 200
                after = f"&after={answer['alias']}"
            asked[rater] = seen
    finally:
        stop(process)
    assert sorted(asked["ann"][:4]) == sorted(asked["bob"][:4]) == sorted(shared)
    assert asked["ann"][:4] != asked["bob"][:4]  # each in their own order
    for rater in ("ann", "bob"):  # then the rest, in the rater's own seeded order
        client, _ = open_app(path, seed=0)
        rest = [m for m in client.app.state.labelling.sequence(rater) if m not in shared]
        assert asked[rater][4] == rest[0]
    ds = read_labels(str(path), "rotation")
    ann, bob = (ds["rating"].sel(rater=r, mid=MIDS).values for r in ("ann", "bob"))
    both = (ann >= 0) & (bob >= 0)
    kappa = cohen_kappa_score(ann[both], bob[both])
    n_shared = sum(1 for m, b in zip(MIDS, both) if b and m in shared)
    assert n_shared == 3 and both.sum() == 3 + (asked["ann"][4] == asked["bob"][4])
    result = run("label", path, "--transform", "rotation", "--agreement")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    counts = {r: (sum(1 for v in plan[r].values() if v == 1) + (extra[r] == 1),
                  sum(1 for v in plan[r].values() if v == 0) + (extra[r] == 0),
                  sum(1 for v in plan[r].values() if v is None)) for r in plan}
    for rater, (ones, zeros, skips) in counts.items():
        assert (f"  {rater}: {ones} invariant, {zeros} variant, {skips} skipped, "
                f"{6 - ones - zeros - skips} not rated") in lines
    pair = next(line for line in lines if line.startswith("  overlap of "))
    assert pair.endswith(f": {both.sum()} model(s) both labelled ({n_shared} of them in the "
                         "shared overlap both were asked first), 1 more rated by both but "
                         "skipped by one or both")
    assert re.search(rf"  Cohen's kappa (ann / bob|bob / ann): {kappa:.3f} on the "
                     rf"{both.sum()} model\(s\) both labelled", result.output), result.output
