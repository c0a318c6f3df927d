"""ml4ml: invariance testing of whole model databases (ML4ML, arXiv 2109.12926).

The spine, one subpackage per stage, each reading and writing ONE Zarr store::

    zoo      train a model database from a pipeline spec
    probe    responses of every model over transformation grids
    measure  variance matrices, the paper's measures, feature tables
    assess   labels and assessors (ML models that judge invariance)
    report   figures and the static HTML report
    store    the only code that touches Zarr
    data     test suites (datasets) and tiny standard-format files

``ml4ml.probe_model`` probes one torch classifier over a transformation grid. Submodules
load lazily, so ``import ml4ml`` does not import torch.
"""

from ml4ml._lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["probe_model", "load_pipeline", "variance_matrices", "measure_database",
           "measure_matrices", "register_measure", "response_measures",
           "register_response_measure", "add_models", "__version__"]

__getattr__ = lazy_exports(__name__, {
    "probe_model": "ml4ml.probe.responses",
    "load_pipeline": "ml4ml.config",
    "variance_matrices": "ml4ml.measure.matrices",
    "measure_database": "ml4ml.measure.measures",
    "measure_matrices": "ml4ml.measure.measures",
    "register_measure": "ml4ml.measure.measures",
    "response_measures": "ml4ml.measure.responses",
    "register_response_measure": "ml4ml.measure.responses",
    "add_models": "ml4ml.zoo.adding",
})
