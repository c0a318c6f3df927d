"""Active labelling: the order of ActiveOrder, learning curves, and 'ml4ml label --learning-curve'."""


import html

import golden
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from simulate_labelling import COLUMNS, ORDERS, one_database, simulated_store
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ml4ml import store
from ml4ml.assess.estimators import make_assessor
from ml4ml.cli import cli
from ml4ml.errors import InputError
from ml4ml.labelling.active import (
    PENALTY_C,
    ActiveOrder,
    labelling_features,
    learning_curve,
    rater_learning_curve,
)
from ml4ml.store.labels import pick_names, read_labels, write_rating

MIDS = [f"m{k:02d}" for k in range(1, 17)] + ["t1", "t2", "t3", "t4"]
INVARIANT = {m for k, m in enumerate(MIDS) if k % 2 == 0}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """20 imported models whose confidence drifts with the parameter unless 'invariant',
    each by its own amount; measured; labels.csv beside the store."""
    folder = tmp_path_factory.mktemp("active")
    golden.drifting_store(folder, MIDS, lambda k, mid: 0.004 * (k % 5) + (
        0.02 if mid not in INVARIANT else 0.0))
    (folder / "labels.csv").write_text(
        "mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS))
    return folder


@pytest.fixture(scope="module")
def features(measured):
    return labelling_features(measured / "db.zarr", "rotation")


@pytest.fixture
def path(measured, tmp_path):
    import shutil

    shutil.copytree(measured / "db.zarr", tmp_path / "db.zarr")
    shutil.copy(measured / "labels.csv", tmp_path / "labels.csv")
    return tmp_path / "db.zarr"


def truth(mids):
    return {m: int(m in INVARIANT) for m in mids}


def test_features_are_the_paper80_set_of_every_measured_model(features):
    assert list(features.index) == MIDS
    assert features.shape == (20, 80) and features.attrs == {"feature_set": "paper80",
                                                             "split": "correct"}
    assert features.dtypes.eq(np.float64).all() and "robust_accuracy" not in features


def test_the_order_starts_at_random_then_asks_the_least_sure(features):
    order = ActiveOrder(features, n_start=4, random_fraction=0.0, seed=3, rater="ann")
    labels, reasons = {}, []
    for _ in range(4):
        mid, why = order.next(labels)
        assert mid not in labels
        labels[mid] = int(mid in INVARIANT)
        reasons.append(why)
    assert reasons == [f"random start ({k} of 4)" for k in (1, 2, 3, 4)]
    if len(set(labels.values())) < 2:  # the start goes on until both classes are seen
        mid, why = order.next(labels)
        assert why == "random start (one class so far)"
    labels = truth(["m01", "m02", "m03", "m04", "m05", "m06"])
    mid, why = order.next(labels)
    # the direct computation: the same assessor, fit on these labels, every model's P(1)
    rows = [m for m in MIDS if m in labels]
    model = make_assessor("logistic", 3).set_params(model__C=PENALTY_C)
    model.fit(features.loc[rows].to_numpy(), [labels[m] for m in rows])
    rest = [m for m in MIDS if m not in labels]
    p = model.predict_proba(features.loc[rest].to_numpy())[:, 1]
    k = int(np.argmin(np.abs(p - 0.5)))
    assert mid == rest[k] and why == f"least sure, p={p[k]:.2f}"
    assert np.allclose(order.probabilities(labels).loc[rest].to_numpy(), p)


def test_the_order_is_deterministic_per_seed_and_rater(features):
    def walk(**kw):
        order, labels, picks = ActiveOrder(features, n_start=3, **kw), {}, []
        for _ in range(8):
            mid, why = order.next(labels)
            labels[mid] = int(mid in INVARIANT)
            picks.append((mid, why))
        return picks

    first = walk(seed=1, rater="ann")
    assert walk(seed=1, rater="ann") == first  # a reload: the same models, the same reasons
    assert walk(seed=1, rater="bob") != first and walk(seed=2, rater="ann") != first
    labels = {m: int(m in INVARIANT) for m, _ in first[:5]}
    a = ActiveOrder(features, n_start=3, seed=1, rater="ann").next(labels)
    assert a == first[5]  # from the labels alone, in a new object


def test_the_random_fraction_holds(features):
    order = ActiveOrder(features, n_start=10, random_fraction=0.2, seed=1, rater="ann")
    steps = order.random_steps(2010)
    assert steps[:10].all()
    share = steps[10:].mean()
    assert abs(share - 0.2) <= 0.02, share  # binomial sd over 2000: 0.009
    # next() follows the coin: random where random_steps says so, least sure elsewhere
    reasons = [order.next(truth(MIDS[:n]))[1] for n in range(10, 20)]
    assert [r.startswith("random (p=0.20)") for r in reasons] == steps[10:20].tolist()
    assert steps[10:20].tolist() == [False, False, True, True, False, False, False, True,
                                     False, False]
    assert all(r.startswith("least sure, p=") for r, s in zip(reasons, steps[10:20]) if not s)
    every = ActiveOrder(features, n_start=0, random_fraction=1.0).next(truth(MIDS[:4]))
    assert every[1] == "random (p=1.00)"


def test_skipped_models_come_last_and_none_when_all_are_labelled(features):
    order = ActiveOrder(features, n_start=2, random_fraction=0.0, seed=0)
    labels = truth(MIDS[:14])
    skipped = MIDS[14:19]
    mid, why = order.next(labels, skipped=skipped)
    assert mid == "t4" and why.startswith("least sure")
    labels["t4"] = 1
    mid, why = order.next(labels, skipped=skipped)
    assert mid in skipped and why.startswith("skipped before; least sure, p=")
    assert order.next(truth(MIDS)) == (None, "every model is labelled")


def test_bad_parameters_are_refused_in_one_line(features):
    with pytest.raises(InputError, match="'random_fraction' parameter must be a number in"):
        ActiveOrder(features, random_fraction=1.5)
    with pytest.raises(InputError, match="'n_start' parameter must be an int >= 0"):
        ActiveOrder(features, n_start=-1)
    with pytest.raises(InputError, match="must have predict_proba; got L2LinearThreshold"):
        from ml4ml.assess.estimators import L2LinearThreshold

        ActiveOrder(features, n_start=0, assessor=L2LinearThreshold()).next(truth(MIDS[:4]))


def test_the_learning_curve_with_every_label_scored_is_cross_validation(features):
    ordered = [(m, int(m in INVARIANT)) for m in reversed(MIDS)] + [("nope", 1), ("m01", -1)]
    curve = learning_curve(features, ordered, min_labels=6, step=5, folds=5, seed=2)
    assert curve["n_labels"].tolist() == [6, 11, 16, 20]
    assert curve["n_scored"].tolist() == [6, 11, 16, 20]
    X = features.loc[list(reversed(MIDS))].to_numpy()
    y = np.array([int(m in INVARIANT) for m in reversed(MIDS)])
    for row in curve.itertuples():
        n = row.n_labels
        k = min(5, np.bincount(y[:n]).min())
        predicted = cross_val_predict(
            make_assessor("logistic", 2).set_params(model__C=PENALTY_C), X[:n], y[:n],
            cv=StratifiedKFold(k, shuffle=True, random_state=2))
        right = predicted == y[:n]
        assert row.n_folds == k
        assert row.accuracy == pytest.approx(right.mean(), abs=1e-12)
        assert row.se == pytest.approx(right.std(ddof=1) / np.sqrt(n), abs=1e-12)
    assert curve["n_folds"].tolist() == [3, 5, 5, 5]
    # one class among the first n: no estimate; fewer than min_labels: no rows
    one = [(m, 1) for m in MIDS[:3]] + [(m, int(m in INVARIANT)) for m in MIDS[3:12]]
    single = learning_curve(features, one, min_labels=2, step=1, folds=3)
    assert single["n_folds"].tolist()[:3] == [0, 0, 0]
    assert single["accuracy"].isna().tolist()[:4] == [True, True, True, True]
    assert single["n_folds"].iloc[4] == 2 and np.isfinite(single["accuracy"].iloc[4])
    assert learning_curve(features, ordered[:5], min_labels=6).empty


def test_the_learning_curve_scores_the_random_picks_corrected_for_the_chosen(features):
    """Every label's out-of-fold correctness c (stratified k-fold over the n labels); each
    random pick i scores c_i + a_i (c_i - mean c of the a_i chosen picks after it) / u,
    u the models not yet rated (skips count: they leave the pool); the chosen picks are
    never scored. Computed here with sklearn's cross_val_predict and numpy."""
    ordered = [(m, int(m in INVARIANT)) for m in MIDS[:14]]
    ordered.insert(5, ("t4", -1))  # a skip: out of the pool, no label
    scored = np.array([k % 3 != 1 for k in range(len(ordered))])  # 1 in 3 chosen
    curve = learning_curve(features, ordered, scored=scored, min_labels=8, step=6, seed=1)
    pairs = [(m, v, s) for (m, v), s in zip(ordered, scored) if v >= 0]
    X = features.loc[[m for m, _, _ in pairs]].to_numpy()
    y = np.array([v for _, v, _ in pairs])
    random_pick = np.array([s for _, _, s in pairs])
    for row in curve.itertuples():
        n = row.n_labels
        k = min(5, np.bincount(y[:n]).min())
        c = cross_val_predict(make_assessor("logistic", 1).set_params(model__C=PENALTY_C),
                              X[:n], y[:n], cv=StratifiedKFold(k, shuffle=True,
                                                               random_state=1)) == y[:n]
        left = len(MIDS) - n - (n > 5)  # the skip came before the 6th label
        e = []
        for i in np.flatnonzero(random_pick[:n]):
            later = [j for j in range(i + 1, n) if not random_pick[j]]
            e.append(c[i] + len(later) * (c[i] - (c[later].mean() if later else 0)) / left)
        assert (row.n_scored, row.n_folds) == (len(e), k)
        assert row.accuracy == pytest.approx(np.clip(np.mean(e), 0, 1), abs=1e-12)
        assert row.se == pytest.approx(np.std(e, ddof=1) / np.sqrt(len(e)), abs=1e-12)
    assert curve["n_labels"].tolist() == [8, 14]
    assert curve["n_scored"].tolist() == [5, 9]
    # the chosen picks change the estimate only through the correction: all scored, it
    # is the plain out-of-fold accuracy of every label
    every = learning_curve(features, ordered, min_labels=14, seed=1)
    assert every["accuracy"].iloc[0] == pytest.approx(c.mean(), abs=1e-12)
    with pytest.raises(InputError, match="'scored' must have one entry per rating"):
        learning_curve(features, ordered, scored=scored[:5])


def test_a_raters_curve_follows_the_order_of_the_ratings(path, features):
    given = ["t2", "m05", "m02", "m11", "m08", "m01", "t1", "m14", "m03", "m04", "m13",
             "m16"]
    picks = ["start"] * 5 + ["least_sure", "random", "least_sure", "browsed", "random",
                             "least_sure", "seeded"]
    with store.writing(path, "test"):
        for k, (mid, pick) in enumerate(zip(given, picks)):
            write_rating(path, "rotation", "ann", mid, int(mid in INVARIANT), pick=pick)
            if k == 5:  # skipped: out of the pool, no label
                write_rating(path, "rotation", "ann", "m06", -1, pick="least_sure")
    curve = rater_learning_curve(path, "rotation", "ann", min_labels=10, step=1)
    ordered = [(m, int(m in INVARIANT)) for m in given]
    ordered.insert(6, ("m06", -1))
    scored = [p in ("start", "random", "seeded") for p in picks]
    scored.insert(6, False)
    expected = learning_curve(features, ordered, scored=scored, min_labels=10, step=1)
    pd.testing.assert_frame_equal(curve, expected)
    without_skip = learning_curve(features, ordered[:6] + ordered[7:],
                                  scored=scored[:6] + scored[7:], min_labels=10, step=1)
    assert not np.allclose(curve["accuracy"], without_skip["accuracy"])  # u counts it
    assert curve.attrs == {"who": "rater ann", "n_labels": 12, "n_scored": 8, "skipped": 1,
                           "order": "the order the ratings were given (rated_at)",
                           "picks": {"browsed": 1, "least_sure": 3, "random": 2, "seeded": 1,
                                     "start": 5},
                           "unrecorded": 0}


def test_the_cli_prints_each_raters_curve_and_draws_it(path, tmp_path, features):
    with store.writing(path, "test"):
        for k, mid in enumerate(MIDS[:12]):
            write_rating(path, "rotation", "ann", mid, int(mid in INVARIANT),
                         pick="start" if k < 10 else "least_sure")
        for mid in MIDS[8:]:  # as rated before picks were recorded
            write_rating(path, "rotation", "bob", mid, int(mid in INVARIANT))
    plot = tmp_path / "curve.png"
    result = run("label", path, "--transform", "rotation", "--learning-curve", "--plot", plot)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("rotation, rater ann: 12 label(s), in the order the ratings were "
                        "given (rated_at); 10 random pick(s) scored, 2 fit on only (picks: "
                        "least_sure 2, start 10)")
    assert lines[1].split() == ["labels", "scored", "accuracy", "se", "folds"]
    ann = learning_curve(features, [(m, int(m in INVARIANT)) for m in MIDS[:12]],
                         scored=[True] * 10 + [False] * 2)
    assert [line.split() for line in lines[2:4]] == [
        [str(r.n_labels), str(r.n_scored), f"{r.accuracy:.3f}", f"{r.se:.3f}",
         str(r.n_folds)] for r in ann.itertuples()]
    assert lines[4] == ("rotation, rater bob: 12 label(s), in the order the ratings were "
                        "given (rated_at); 12 random pick(s) scored, 0 fit on only (picks: "
                        "unrecorded 12)")
    assert lines[5] == ("  12 label(s) given before the store recorded how models were "
                        "picked count as random picks")
    assert lines[-2].startswith("(accuracy on the models not yet labelled, estimated from "
                                "your random picks (the shared overlap")
    assert lines[-2].endswith("; se: its standard error; n/a: a class has fewer than 2 "
                              "labels, or there are fewer than 2 random picks)")
    assert lines[-1] == f"wrote {plot}"
    assert Image.open(plot).size == (700, 400)
    only = run("label", path, "--transform", "rotation", "--learning-curve", "--rater", "bob")
    assert only.exit_code == 0 and "rater ann" not in only.output


@pytest.mark.parametrize("args, message", [
    (["--learning-curve", "--rater", "eve"],
     "field '--rater': unknown rater 'eve'; the store has ratings by nobody yet"),
    (["--rater", "ann"], "field '--rater': --rater goes with --learning-curve"),
    (["--plot", "x.png"], "field '--plot': --plot goes with --learning-curve"),
    (["--learning-curve"], "the store has no labels for 'rotation' yet"),
    (["--learning-curve", "--plot", "/nonexistent/x.png"],
     "field '--plot': no folder '/nonexistent' to write /nonexistent/x.png into"),
])
def test_cli_errors_are_one_line(path, args, message):
    result = run("label", path, "--transform", "rotation", *args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_source_without_order_is_shuffled_by_seed(path, features):
    assert run("label", path, "--transform", "rotation", "--from",
               path.parent / "labels.csv").exit_code == 0
    curve = rater_learning_curve(path, "rotation", min_labels=10, seed=4)
    order = np.random.default_rng(4).permutation(len(MIDS))
    expected = learning_curve(features, [(MIDS[k], int(MIDS[k] in INVARIANT)) for k in order],
                              seed=4)
    pd.testing.assert_frame_equal(curve, expected)
    assert curve.attrs["who"] == "source file" and curve.attrs["n_labels"] == 20
    assert curve.attrs["n_scored"] == 20 and curve.attrs["picks"] == {"seeded": 20}


def test_the_page_in_active_order_asks_what_active_order_picks_and_shows_the_curve(path):
    """The labelling page's --order active, over HTTP: a seeded random start, then the
    least-sure model (by the assessor fit on this rater's labels, computed here directly)
    or a random one where the seeded coin says so; its learning curve is the rater's."""
    from starlette.testclient import TestClient

    from ml4ml.labelling.app import create_app

    app = create_app(str(path), "rotation", ["ann"], order="active")
    token = app.state.access.tokens["ann"]
    aliases = {a: m for m, a in app.state.access.aliases("ann", MIDS).items()}
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    headers = {"Authorization": f"Bearer {token}", "Origin": "http://127.0.0.1:8765"}
    features = labelling_features(path, "rotation")
    reference = ActiveOrder(features, seed=0, rater="ann")
    random_step = reference.random_steps(len(MIDS))
    labels, least_sure = {}, 0
    for n in range(len(MIDS)):
        mid = aliases[client.get("/api/next", headers=headers).json()["alias"]]
        assert mid not in labels
        if n >= 10 and not random_step[n]:
            X = features.to_numpy()
            fit = make_assessor("logistic", 0).set_params(model__C=PENALTY_C).fit(
                X[[features.index.get_loc(m) for m in labels]], list(labels.values()))
            rest = [m for m in features.index if m not in labels]
            p = fit.predict_proba(X[[features.index.get_loc(m) for m in rest]])[:, 1]
            assert mid == rest[int(np.argmin(np.abs(p - 0.5)))]
            least_sure += 1
        assert mid == reference.next(labels)[0]
        answer = client.post("/api/labels", json={"alias": app.state.access.aliases(
            "ann", [mid])[mid], "label": int(mid in INVARIANT)}, headers=headers)
        assert answer.status_code == 200, answer.text
        labels[mid] = int(mid in INVARIANT)
    assert least_sure >= 5 and client.get("/api/next", headers=headers).json()["done"]
    # the store says how each was picked: the start and the coin's random picks are the
    # random picks the curve scores; the least-sure picks are fit on only
    ds = read_labels(str(path), "rotation")
    kinds = dict(zip(ds["mid"].values, pick_names(ds["pick"].sel(rater="ann").values)))
    given = list(labels)
    expected_kinds = ["start" if n < 10 else "random" if random_step[n] else "least_sure"
                      for n in range(len(MIDS))]
    assert [kinds[m] for m in given] == expected_kinds
    curve = client.get("/api/curve", headers=headers).json()
    scored = [k != "least_sure" for k in expected_kinds]
    expected = learning_curve(features, [(m, labels[m]) for m in given], scored=scored)
    assert curve["order"] == "active" and curve["labelled"] == 20
    assert curve["scored"] == sum(scored) == 20 - least_sure
    assert curve["picks"] == {"least_sure": least_sure, "start": 10,
                              "random": 10 - least_sure}
    assert [p["n_labels"] for p in curve["points"]] == expected["n_labels"].tolist()
    assert [p["n_scored"] for p in curve["points"]] == expected["n_scored"].tolist()
    shown = np.array([np.nan if p["accuracy"] is None else p["accuracy"]
                      for p in curve["points"]])
    assert np.allclose(shown, expected["accuracy"], atol=1e-4, equal_nan=True)
    # every model labelled: no model left to estimate for, while chosen picks need
    # correcting; before that, an estimate at every point
    assert curve["points"][-1]["accuracy"] is None and np.isfinite(shown[:-1]).all()
    assert "random picks" in curve["what"] and "never scored" in curve["what"]
    assert "Order: active" in client.get("/", headers=headers).text


def test_in_active_order_the_shared_overlap_comes_first_and_starts_it(path, features):
    """--overlap 6 with --order active: both raters are asked the same 6 models first,
    each in their own order (recorded as 'overlap', random picks the curve scores), then
    ActiveOrder goes on from those labels: its random start takes 4 more (the overlap
    counts towards its 10), then the least sure or, by the seeded coin, a random one."""
    from starlette.testclient import TestClient

    from ml4ml.labelling.app import create_app
    from ml4ml.labelling.order import overlap_models

    app = create_app(str(path), "rotation", ["ann", "bob"], order="active", overlap=6)
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    shared = overlap_models(MIDS, 6, seed=0)
    asked = {}
    for rater in ("ann", "bob"):
        token = app.state.access.tokens[rater]
        headers = {"Authorization": f"Bearer {token}", "Origin": "http://127.0.0.1:8765"}
        aliases = app.state.access.aliases(rater, MIDS)
        reference = ActiveOrder(features, seed=0, rater=rater)
        labels = {}
        for n in range(14):
            answer = client.get("/api/next", headers=headers).json()
            mid = {a: m for m, a in aliases.items()}[answer["alias"]]
            assert answer["progress"]["overlap"] == {"total": 6, "rated": min(n, 6)}
            if n < 6:
                assert mid in shared and mid not in labels
            else:
                assert mid == reference.next(labels)[0]
            assert client.post("/api/labels", json={"alias": aliases[mid], "label": int(
                mid in INVARIANT)}, headers=headers).status_code == 200
            labels[mid] = int(mid in INVARIANT)
        asked[rater] = list(labels)
        ds = read_labels(str(path), "rotation")
        kinds = dict(zip(ds["mid"].values, pick_names(ds["pick"].sel(rater=rater).values)))
        steps = reference.random_steps(14)
        assert [kinds[m] for m in asked[rater]] == ["overlap"] * 6 + ["start"] * 4 + [
            "random" if steps[n] else "least_sure" for n in range(10, 14)]
        curve = client.get("/api/curve", headers=headers).json()
        assert curve["scored"] == 10 + int(steps[10:14].sum())
        assert curve["picks"]["overlap"] == 6 and curve["picks"]["start"] == 4
    assert sorted(asked["ann"][:6]) == sorted(asked["bob"][:6]) == sorted(shared)
    assert asked["ann"][:6] != asked["bob"][:6]
    page = client.get(f"/?token={app.state.access.tokens['ann']}").text
    assert "Order: first the 6 models every rater is shown (in your own order), so that the "\
        "raters' agreement can be measured; then active: 10 models" in \
        " ".join(html.unescape(page).split())


# ------------------------------------------------------------ the curve under active order
def test_the_curve_says_active_beats_random_when_it_does_on_the_models_left():
    """The review's setup (tests/simulate_labelling.py): 200 models, 60 labels, 8 seeds,
    active order (20% random picks) and random order. On the models not labelled after
    60 labels the assessor is more accurate with the active order; the curve (the random
    picks, corrected for the assessor's picks) says so and is near the truth for both
    orders, where the out-of-fold accuracy over every label ranks them the wrong way."""
    rows = {order: [one_database(seed, order) for seed in range(8)] for order in ORDERS}
    mean = {order: {c: float(np.mean([r[c] for r in rows[order]])) for c in COLUMNS}
            for order in ORDERS}
    print(mean)
    active, random = mean["active"], mean["random"]
    assert [r["n_scored"] for r in rows["random"]] == [60] * 8
    assert [r["n_scored"] for r in rows["active"]] == [
        10 + int(ActiveOrder(simulated_store(seed)[0], seed=seed, rater="sim")
                 .random_steps(60)[10:].sum()) for seed in range(8)]
    assert active["truth"] - random["truth"] >= 0.05  # the setup: active is better
    assert active["curve"] - random["curve"] >= 0.03  # and the curve says so
    for order in ORDERS:  # without the selection's bias (8 seeds: s.e. about 0.02)
        assert abs(mean[order]["curve"] - mean[order]["truth"]) <= 0.04, mean
    assert random["curve"] == random["random_picks_only"] == random["every_label"]
    # what the curve showed before (every label scored): upside down
    assert active["every_label"] < random["every_label"]
    assert active["truth"] - active["every_label"] >= 0.1
    # the random picks alone, uncorrected: low for the models left under active order
    assert active["random_picks_only"] < active["curve"]
