"""Every model's judgement by the chosen assessor: which models are not invariant.

``out_of_fold_probability`` (stored in ``assess/<transform>``) is each model's
out-of-fold probability of "invariant"; ``judgement_table`` joins the assessment, the
labels, the models table and the clean accuracy into one row per model (``COLUMNS``),
what ``ml4ml run`` and ``ml4ml assess`` write to ``STORE.<transform>.judgements.csv`` and
what the report opens with; ``judgements`` reads them from a store; ``answer_counts``
counts them.

A model's judgement is out of fold where it is labelled (the majority of the chosen
assessor's test-fold predictions over the repeats: fits that never saw its label), and the
refit assessor's label where it is not (it is in no test fold).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import xarray as xr

from ml4ml import dims, store
from ml4ml.assess.inputs import stored_labels
from ml4ml.assess.lineage import check_assessment
from ml4ml.errors import StoreError

__all__ = ["out_of_fold_probability", "judgement_table", "judgements", "answer_counts",
           "how_judged",
           "model_sources", "clean_accuracy", "COLUMNS", "PROBABILITY_KINDS"]

# how ``oof_probability`` was computed, by whether the assessor has predict_proba
PROBABILITY_KINDS = {
    "probability": "mean over the repeats of the assessor's predicted probability of "
                   "'invariant' on the fold where the model was tested",
    "vote_fraction": "fraction of the repeats whose fit predicted 'invariant' on the fold "
                     "where the model was tested (the assessor has no probabilities)",
}

# the columns of the judgements table (and CSV), defined
COLUMNS = {
    "mid": "model id",
    "label": "the label the assessment learned from: 1 invariant, 0 variant, -1 unknown",
    "oof_prediction": "out-of-fold label: the majority, over the repeats, of the chosen "
                      "assessor's predictions on the fold where the model was tested (ties "
                      "invariant); -1 for a model in no fold (unlabelled)",
    "oof_probability": "out-of-fold probability of 'invariant' (PROBABILITY_KINDS); empty "
                       "for a model in no fold",
    "refit_prediction": "label by the chosen assessor refit on every labelled model "
                        "(in-sample for labelled models); -1 for a model not in the assessment",
    "refit_score": "the refit assessor's score: its probability of 'invariant', or its "
                   "decision function where it has no probabilities",
    "holdout": "a hold-out model (always its own fold)",
    "source": "where the model comes from: its training recipe, 'added: <format> file "
              "<name>' (add-models) or 'imported: <file>' (import-legacy)",
    "clean_accuracy": "accuracy on the probed suite at the identity (the grid's centre)",
    "robust_accuracy": "fraction of samples correct at every parameter of the grid",
    "judgement": "the answer: oof_prediction where the model was in a test fold, else "
                 "refit_prediction; 1 invariant, 0 variant (not invariant), -1 not judged",
    "judged_by": "out_of_fold, refit (unlabelled: in no test fold) or none (not in the "
                 "assessment: no measures when it was made)",
    "disagrees_with_label": "labelled, and the judgement differs from the label",
}


def out_of_fold_probability(results: xr.Dataset, estimator: str) -> xr.DataArray:
    """Each model's out-of-fold probability of "invariant" by ``estimator``.

    results : the protocol's Dataset (``prediction``, ``probability`` (repeat, mid,
        estimator); ``prediction`` -1 where the model was not tested).
    Returns DataArray (mid,) float64: the mean over the repeats of its predicted
    probability on the fold where it was tested; for an estimator without probabilities
    (all NaN) the fraction of repeats predicting invariant; NaN for a model never tested.
    attrs ``kind``: "probability" or "vote_fraction" (``PROBABILITY_KINDS``).
    """
    pick = {dims.ESTIMATOR: estimator}
    votes = results["prediction"].sel(pick).transpose("repeat", dims.MID).values
    proba = results["probability"].sel(pick).transpose("repeat", dims.MID).values \
        if "probability" in results else np.full(votes.shape, np.nan)
    tested = votes >= 0
    n_tested = tested.sum(axis=0)
    kind = "probability" if np.isfinite(proba[tested]).any() else "vote_fraction"
    values = np.where(tested, proba, 0.0) if kind == "probability" else \
        (votes == 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_tested > 0, values.sum(axis=0) / n_tested, np.nan)
    return xr.DataArray(mean, dims=dims.MID, coords={dims.MID: results[dims.MID].values},
                        attrs={"long_name": "out-of-fold probability of invariant",
                               "kind": kind, "description": f"{estimator}: "
                               f"{PROBABILITY_KINDS[kind]}; NaN for a model never tested"})


def model_sources(models: xr.Dataset) -> list[str]:
    """Where each model of the ``models`` table comes from, in a few words (row order):
    its recipe ("rotation ± 20 degrees, anomaly 4 (class_ordered)"; the architecture
    first where the trained models have several), "added: export file x.pt2" or
    "imported: r.npy"."""
    from ml4ml.zoo.recipe import recipe_text

    n = models.sizes.get(dims.MID, 0)

    def column(name, default):
        if name not in models:
            return [default] * n
        return [default if v is None or (isinstance(v, float) and np.isnan(v)) else v
                for v in models[name].values.tolist()]

    source, fmt = column("source", ""), column("checkpoint_format", "")
    checkpoint, results = column("checkpoint", ""), column("results_file", "")
    augmentation, span = column("augmentation", "none"), column("aug_range", 0.0)
    anomaly, arch = column("anomaly", 0), column("arch", "")
    trained = [k for k in range(n) if str(source[k]) not in ("added", "legacy")]
    several = len({str(arch[k]) for k in trained}) > 1
    out = []
    for k in range(n):
        if source[k] == "added":
            out.append(f"added: {fmt[k] or 'model'} file {_name(checkpoint[k])}".strip())
        elif source[k] == "legacy":
            out.append(f"imported: {_name(results[k])}".rstrip(": "))
        else:
            out.append(recipe_text(str(augmentation[k]), float(span[k] or 0.0),
                                   int(anomaly[k] or 0), str(arch[k]) if several else ""))
    return out


def _name(file) -> str:
    return PurePosixPath(str(file).replace("\\", "/")).name if file else ""


def clean_accuracy(measures: xr.Dataset) -> pd.Series:
    """Accuracy at the identity (the grid's centre) of every model of a measures group,
    indexed by mid."""
    accuracy = measures["accuracy"]
    centre = accuracy.sizes[dims.AUG_PARAM] // 2
    values = np.asarray(accuracy.isel({dims.AUG_PARAM: centre}).values, dtype=np.float64)
    return pd.Series(values, index=[str(m) for m in measures[dims.MID].values])


def judgement_table(assessment: xr.Dataset, models: xr.Dataset, labels: dict,
                    clean: pd.Series) -> pd.DataFrame:
    """One row per model of the ``models`` table (its order), the ``COLUMNS``.

    assessment : the ``assess/<transform>`` group (dim mid: ``out_of_fold``,
        ``out_of_fold_probability``, ``predicted``, ``score``, ``robust_accuracy``).
    labels : {mid: 1/0/-1} of the assessment's label source.
    clean : clean accuracy by mid (``clean_accuracy``).
    """
    mids = [str(m) for m in models[dims.MID].values]
    assessed = pd.DataFrame({
        "oof_prediction": np.asarray(assessment["out_of_fold"].values, dtype=np.int64),
        "oof_probability": np.asarray(assessment["out_of_fold_probability"].values,
                                      dtype=np.float64),
        "refit_prediction": np.asarray(assessment["predicted"].values, dtype=np.int64),
        "refit_score": np.asarray(assessment["score"].values, dtype=np.float64),
        "robust_accuracy": np.asarray(assessment["robust_accuracy"].values,
                                      dtype=np.float64)},
        index=[str(m) for m in assessment[dims.MID].values]).reindex(mids)
    label = np.array([int(labels.get(m, -1)) for m in mids], dtype=np.int64)
    oof = assessed["oof_prediction"].fillna(-1).to_numpy(np.int64)
    refit = assessed["refit_prediction"].fillna(-1).to_numpy(np.int64)
    judgement = np.where(oof >= 0, oof, refit)
    holdout = np.asarray(models["holdout"].values, dtype=bool) if "holdout" in models \
        else np.array([m.startswith("t") for m in mids])
    table = pd.DataFrame({
        "mid": mids, "label": label, "oof_prediction": oof,
        "oof_probability": assessed["oof_probability"].to_numpy(),
        "refit_prediction": refit, "refit_score": assessed["refit_score"].to_numpy(),
        "holdout": holdout, "source": model_sources(models),
        "clean_accuracy": clean.reindex(mids).to_numpy(np.float64),
        "robust_accuracy": assessed["robust_accuracy"].to_numpy(),
        "judgement": judgement,
        "judged_by": np.where(oof >= 0, "out_of_fold", np.where(refit >= 0, "refit", "none")),
        "disagrees_with_label": (label >= 0) & (judgement >= 0) & (judgement != label)})
    kind = str(assessment["out_of_fold_probability"].attrs.get("kind", "probability"))
    table.attrs = {"assessor": str(assessment.attrs.get("chosen_assessor", "")),
                   "repeats": int(assessment.sizes.get("repeat", 0)),
                   "label_source": str(assessment.attrs.get("label_source", "")),
                   "probability_kind": kind}
    return table


def judgements(path, transform: str, *, suite=None) -> pd.DataFrame:
    """The judgement of every model of the store (``judgement_table``), from its current
    assessment of ``transform``; StoreError while it is stale (``check_assessment``) or
    made by an ml4ml that stored no out-of-fold probabilities."""
    check_assessment(path, transform, suite=suite)
    group = store.assess_group(transform)
    ds = store.open_group(path, group).load()
    if "out_of_fold_probability" not in ds:
        raise StoreError(f"'{group}' holds no out-of-fold probabilities (made by an older "
                         f"ml4ml)", file=path, field=f"{group}/out_of_fold_probability",
                         hint=f"run 'ml4ml assess {path} --transform {transform}' again")
    _, labels = stored_labels(path, transform, str(ds.attrs["label_source"]))
    suite = suite or ds.attrs.get("suite") or None
    pairs = [(s, t) for s, t in store.list_groups(path, "measures")
             if t == transform and (suite is None or s == suite)]
    measures = store.open_group(path, store.measures_group(*pairs[0]))
    return judgement_table(ds, store.read_models(path), labels, clean_accuracy(measures))


def answer_counts(table: pd.DataFrame) -> dict:
    """The answer's numbers: models judged (``judged``) and judged variant (``variant``),
    of them labelled (out of fold: ``labelled``, ``labelled_variant``) and unlabelled
    (refit: ``unlabelled``, ``unlabelled_variant``), ``disagree`` (with the label),
    ``models`` (every row) and ``unjudged`` (not in the assessment)."""
    judged = table["judgement"].to_numpy() >= 0
    variant = table["judgement"].to_numpy() == 0
    oof = (table["judged_by"] == "out_of_fold").to_numpy()
    refit = (table["judged_by"] == "refit").to_numpy()
    return {"models": len(table), "judged": int(judged.sum()), "variant": int(variant.sum()),
            "invariant": int((table["judgement"].to_numpy() == 1).sum()),
            "labelled": int(oof.sum()), "labelled_variant": int((oof & variant).sum()),
            "unlabelled": int(refit.sum()), "unlabelled_variant": int((refit & variant).sum()),
            "disagree": int(table["disagrees_with_label"].sum()),
            "unjudged": int((~judged).sum())}


def how_judged(counts: dict, chosen: str, repeats: int) -> list[str]:
    """How the models were judged, in words, with the counts (``answer_counts``): out of
    fold for the labelled, by the refit assessor for the unlabelled, none for the rest."""
    parts = [f"{counts['labelled_variant']} of {counts['labelled']} labelled out of fold "
             f"(the majority over {repeats} repeats of fits that never saw the model's "
             f"label)"]
    if counts["unlabelled"]:
        parts.append(f"{counts['unlabelled_variant']} of {counts['unlabelled']} unlabelled "
                     f"by the refit {chosen}")
    if counts["unjudged"]:
        parts.append(f"{counts['unjudged']} not in the assessment (no measures when it was "
                     f"made)")
    return parts
