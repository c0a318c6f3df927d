"""Report stage: figures of a model database and the static HTML report.

Modules: ``figures`` (matrix strips, accuracy curves, importances as PNG files), ``answer``
(the page's opening: the models judged not invariant, the class colours), ``page``
(the ``index.html``), ``stage`` (``report_store`` over a store, ``plot_model``).
"""

from ml4ml._lazy import lazy_exports

__all__ = ["report_store", "plot_model", "model_figures"]

__getattr__ = lazy_exports(__name__, {
    "report_store": "ml4ml.report.stage",
    "plot_model": "ml4ml.report.stage",
    "model_figures": "ml4ml.report.stage",
})
