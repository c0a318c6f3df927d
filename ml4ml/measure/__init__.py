"""Measure stage: variance matrices, the paper's measures, feature tables, ``measure_store``.

Modules: ``matrices`` (``variance_matrices``), ``measures`` (every paper measure,
accuracies, ``register_measure``), ``responses`` (measures of the responses themselves,
``register_response_measure``; their kernel: ``response_kernels``), ``tables`` (index
tables the measures share), ``features`` (``paper80`` and other feature tables), ``stage``
(every probed model of a store into ``matrices/...`` and ``measures/...``). Definitions:
docs/measures.md.
"""

from ml4ml._lazy import lazy_exports

__all__ = ["variance_matrices", "measure_matrices", "measure_database", "accuracy",
           "register_measure", "unregister_measure", "registered_measures", "features",
           "paper80", "measure_store", "store_features", "response_measures",
           "register_response_measure", "unregister_response_measure",
           "registered_response_measures"]

__getattr__ = lazy_exports(__name__, {
    "variance_matrices": "ml4ml.measure.matrices",
    "measure_matrices": "ml4ml.measure.measures",
    "measure_database": "ml4ml.measure.measures",
    "accuracy": "ml4ml.measure.measures",
    "register_measure": "ml4ml.measure.measures",
    "unregister_measure": "ml4ml.measure.measures",
    "registered_measures": "ml4ml.measure.measures",
    "features": "ml4ml.measure.feature_sets",
    "paper80": "ml4ml.measure.feature_sets",
    "measure_store": "ml4ml.measure.stage",
    "store_features": "ml4ml.measure.stage",
    "response_measures": "ml4ml.measure.responses",
    "register_response_measure": "ml4ml.measure.responses",
    "unregister_response_measure": "ml4ml.measure.responses",
    "registered_response_measures": "ml4ml.measure.responses",
})
