"""Assess stage: assessors that tell invariant models from variant ones, and their protocol.

Modules: ``estimators`` (the assessors and baselines as scikit-learn estimators:
``L2LinearThreshold``, ``FeatureThreshold``, ``make_assessor``, ``make_baseline`` and the
name registries ``ASSESSORS``, ``BASELINES``), ``protocol`` (``run_protocol``: the paper's
three-fold protocol with hold-out models, metrics and permutation importances as one
``xarray.Dataset``), ``comparison`` (``summary``, ``compare``: the verdict, by
``significance_test``: select, then test, ``out_of_fold`` labels, ``top_features``,
``nadeau_bengio_ttest``), ``labels`` (labels per transform and
source: files, recipe proxies, expert raters), ``stage`` (the protocol over a store), ``inputs`` (what an assessment reads from a store:
``stored_labels``, ``feature_table``), ``lineage`` (what an assessment was made from;
``check_assessment``: is it still current),
``splitter`` (``ProtocolSplit``: the protocol's folds as a scikit-learn CV splitter),
``significance`` (``significance_test``: select, then test: the assessor and the baseline
chosen by cross-validation on the regular models alone, compared on the hold-out models by
an exact sign-flip test, ``sign_flip_test``, with the interval that inverts it), ``judgements``
(every model's judgement by the chosen assessor: out-of-fold label and probability,
refit label and score, source; what ``STORE.<transform>.judgements.csv`` holds).
"""

from ml4ml._lazy import lazy_exports

__all__ = ["L2LinearThreshold", "FeatureThreshold", "ASSESSORS", "BASELINES", "METHODS",
           "make_assessor", "make_baseline", "make_method", "method_kind", "run_protocol",
           "permutation_drops", "binary_metrics", "fold_assignment", "FOLD_NAMES", "summary",
           "compare", "out_of_fold", "top_features", "nadeau_bengio_ttest", "ProtocolSplit",
           "significance_test", "sign_flip_test"]

__getattr__ = lazy_exports(__name__, {
    "L2LinearThreshold": "ml4ml.assess.estimators",
    "FeatureThreshold": "ml4ml.assess.estimators",
    "ASSESSORS": "ml4ml.assess.estimators",
    "BASELINES": "ml4ml.assess.estimators",
    "METHODS": "ml4ml.assess.estimators",
    "make_assessor": "ml4ml.assess.estimators",
    "make_baseline": "ml4ml.assess.estimators",
    "make_method": "ml4ml.assess.estimators",
    "method_kind": "ml4ml.assess.estimators",
    "run_protocol": "ml4ml.assess.protocol",
    "permutation_drops": "ml4ml.assess.protocol",
    "binary_metrics": "ml4ml.assess.protocol",
    "fold_assignment": "ml4ml.assess.protocol",
    "FOLD_NAMES": "ml4ml.assess.protocol",
    "summary": "ml4ml.assess.comparison",
    "compare": "ml4ml.assess.comparison",
    "out_of_fold": "ml4ml.assess.comparison",
    "top_features": "ml4ml.assess.comparison",
    "nadeau_bengio_ttest": "ml4ml.assess.comparison",
    "ProtocolSplit": "ml4ml.assess.splitter",
    "significance_test": "ml4ml.assess.significance",
    "sign_flip_test": "ml4ml.assess.significance",
})

