"""Labels: files in two layouts, the recipe proxy, majorities and inter-rater agreement."""

import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import cohen_kappa_score

from ml4ml.assess.labels import (agreement, cohen_kappa, fleiss_kappa, krippendorff_alpha,
                                 majority, read_label_file, recipe_labels)
from ml4ml.errors import InputError
from ml4ml.zoo.recipe import Recipe
from ml4ml.zoo.stage import recipe_table

MIDS = ["m1", "m2", "m3", "t1"]


def test_a_csv_and_the_references_mlabel_layout(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("mid,label\nm1,1\nm2,0\n\nt1,1\n")
    assert read_label_file(csv, "rotation", MIDS) == {"m1": 1, "m2": 0, "t1": 1}
    mlabel = tmp_path / "mlabel.txt"
    mlabel.write_text("model rotation brightness scaling\nm1 1 0 0\nm2 0 1 1\nm3 1 1 0\n")
    assert read_label_file(mlabel, "rotation", MIDS) == {"m1": 1, "m2": 0, "m3": 1}
    assert read_label_file(mlabel, "brightness", MIDS) == {"m1": 0, "m2": 1, "m3": 1}
    assert read_label_file(mlabel, "scaling", MIDS) == {"m1": 0, "m2": 1, "m3": 0}


@pytest.mark.parametrize("text, message", [
    ("mid,label\nm1,1\nm9,0\n", r"labels.csv: field 'line 3': unknown model id 'm9'; the "
                                r"store has m1, m2, m3, t1"),
    ("mid,label\nm1,1\nm1,0\n", r"field 'line 3': model 'm1' is labelled twice"),
    ("mid,label\nm1,2\n", r"field 'line 2': label '2' of model 'm1' is not 0 or 1"),
    ("mid,label\nm1,yes\n", r"label 'yes' of model 'm1' is not 0 or 1"),
    ("id,value\nm1,1\n", r"field 'line 1': a CSV label file needs a header 'mid,label'"),
    ("mid,label\n", r"has a header but no labels"),
    ("", r"the label file is empty"),
])
def test_bad_label_files_are_refused_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_label_file(path, "rotation", MIDS)


def test_the_mlabel_layout_has_no_column_for_other_transforms(tmp_path):
    path = tmp_path / "mlabel.txt"
    path.write_text("model rotation brightness scaling\nm1 1 0 0\n")
    with pytest.raises(InputError, match="mlabel.txt has labels for rotation, brightness, "
                                         "scaling, not 'blur'"):
        read_label_file(path, "blur", MIDS)
    path.write_text("model rotation brightness scaling\nm1 1\n")
    with pytest.raises(InputError, match=r"field 'line 2': expected at least 4 columns"):
        read_label_file(path, "scaling", MIDS)


def test_the_recipe_rule():
    grid = np.linspace(-45, 45, 31)
    recipes = [
        Recipe("m1", augmentation="rotation", aug_range=45),        # covers +-45: 1
        Recipe("m2", augmentation="rotation", aug_range=44.9),      # not quite: 0
        Recipe("m3", augmentation="rotation", aug_range=60, anomaly=8,
               anomaly_fraction=0.2),                                 # test leakage: 0
        Recipe("m4", augmentation="rotation", aug_range=60, anomaly=6,
               anomaly_removed=((10.0, 60.0),)),                      # hole in range: 0
        Recipe("m5", augmentation="rotation", aug_range=60, anomaly=6,
               anomaly_removed=((50.0, 60.0),)),                      # hole outside: 1
        Recipe("m6", augmentation="rotation", aug_range=60, anomaly=4),  # class-ordered: 0
        Recipe("m7", augmentation="rotation", aug_range=60, anomaly=7,
               anomaly_fraction=0.2),                                 # wrong labels: 1
        Recipe("m8", augmentation="scaling", aug_range=0.5),          # another family: 0
        Recipe("m9", augmentation="none"),                            # none: 0
    ]
    assert recipe_labels(recipe_table(recipes), "rotation", grid) == {
        "m1": 1, "m2": 0, "m3": 0, "m4": 0, "m5": 1, "m6": 0, "m7": 1, "m8": 0, "m9": 0}
    scaling = recipe_labels(recipe_table(recipes), "scaling", np.linspace(0.6, 1.4, 9))
    assert scaling["m8"] == 1 and scaling["m1"] == 0  # 1 +- 0.5 covers 0.6 .. 1.4
    assert recipe_labels(recipe_table(recipes), "scaling", np.linspace(0.4, 1.6, 9))["m8"] == 0
    imported = xr.Dataset({"holdout": ("mid", [False])}, coords={"mid": ["legacy1"]})
    assert recipe_labels(imported, "rotation", grid) == {"legacy1": -1}


def test_majority_and_ties():
    ratings = np.array([[1, 0, 1, -1, 1], [1, 1, 0, -1, -1], [0, 1, -1, -1, 1]])
    labels, tied = majority(ratings)
    assert labels.tolist() == [1, 1, -1, -1, 1]
    assert tied.tolist() == [False, False, True, False, False]


def test_kappas_and_alpha_against_independent_computations():
    a = np.array([1, 1, 0, 1, 0, 0, 1, 1, 0, 1])
    b = np.array([1, 0, 0, 1, 0, 1, 1, 1, 0, 0])
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    # Fleiss' kappa by hand: 4 items, 3 raters
    ratings = np.array([[1, 0, 1, 1], [1, 0, 0, 1], [1, 1, 0, 1]])
    # per item agreement P_i: 1, 1/3, 1/3, 1 -> mean 2/3; shares: 8/12 ones, 4/12 zeros
    p_e = (8 / 12) ** 2 + (4 / 12) ** 2
    assert fleiss_kappa(ratings) == pytest.approx(0.25, abs=1e-12)
    assert fleiss_kappa(ratings) == pytest.approx((2 / 3 - p_e) / (1 - p_e), abs=1e-12)
    # Krippendorff's alpha (nominal) by hand on the same data without missing values:
    # coincidences o_00 = 2 (items 2, 3: 1 pair each x 2 / (3-1)) ... computed as
    # alpha = 1 - (n - 1) * D_o / sum_{c != k} n_c n_k
    counts = np.array([[0, 3], [2, 1], [2, 1], [0, 3]])
    o = np.zeros((2, 2))
    for n in counts:
        o += (np.outer(n, n) - np.diag(n)) / (n.sum() - 1)
    n_c = o.sum(axis=1)
    expected = 1 - (n_c.sum() - 1) * (o[0, 1] + o[1, 0]) / (2 * n_c[0] * n_c[1])
    assert krippendorff_alpha(ratings) == pytest.approx(expected, abs=1e-12)
    # a missing rating: that item has two raters left, and alpha still uses it
    missing = ratings.copy()
    missing[2, 0] = -1
    assert np.isfinite(krippendorff_alpha(missing))
    assert krippendorff_alpha(missing) != pytest.approx(krippendorff_alpha(ratings))
    perfect = np.array([[1, 0, 1, 0], [1, 0, 1, 0]])
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    assert fleiss_kappa(perfect) == pytest.approx(1.0)


def test_agreement_reports_counts_pairs_and_the_recipe():
    ratings = np.array([[1, 0, 1, 1, -1, -1], [1, 0, 0, 1, 1, -1]])
    skipped = np.array([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=bool)
    shared = np.array([[1, 1, 1, 0, 1, 0], [1, 1, 0, 0, 1, 0]], dtype=bool)
    recipe = np.array([1, 0, 0, 1, 0, 1])
    result = agreement(ratings, ["ann", "bob"], recipe, skipped=skipped, shared=shared)
    assert result["counts"] == {
        "ann": {"invariant": 3, "variant": 1, "skipped": 1, "unrated": 1},
        "bob": {"invariant": 3, "variant": 2, "skipped": 1, "unrated": 0}}
    pair = result["pairwise"][("ann", "bob")]
    # both labelled: the first four; both asked as the shared overlap: the first two of
    # them; rated by both with a skip: the fifth (ann skipped); the sixth ann never rated
    assert (pair["n"], pair["n_overlap"], pair["skipped"]) == (4, 2, 1)
    assert pair["kappa"] == pytest.approx(cohen_kappa_score([1, 0, 1, 1], [1, 0, 0, 1]))
    assert (result["n_fleiss"], result["n_alpha"]) == (4, 4)
    assert result["fleiss_kappa"] == pytest.approx(fleiss_kappa(ratings[:, :4]))
    assert result["with_recipe"]["ann"]["agreement"] == pytest.approx(3 / 4)
    assert result["with_recipe"]["bob"]["agreement"] == pytest.approx(4 / 5)
    assert result["ties"] == 1 and result["with_recipe"]["majority"]["n"] == 4
    plain = agreement(ratings, ["ann", "bob"])  # without skips: a -1 is "not rated"
    assert plain["counts"]["ann"] == {"invariant": 3, "variant": 1, "skipped": 0,
                                      "unrated": 2}
    assert plain["pairwise"][("ann", "bob")]["skipped"] == 0
