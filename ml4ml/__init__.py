"""ml4ml: invariance testing of whole model databases (ML4ML, arXiv 2109.12926).

``ml4ml.probe_model`` probes one torch classifier over a transformation grid; the
stages (``zoo``, ``probing``, ``measuring``) work on a whole store. Submodules load
lazily, so ``import ml4ml`` does not import torch.
"""

__version__ = "0.1.0"
__all__ = ["probe_model", "load_pipeline", "variance_matrices", "measure_database",
           "register_measure", "__version__"]

_EXPORTS = {
    "probe_model": "ml4ml.probe",
    "load_pipeline": "ml4ml.config",
    "variance_matrices": "ml4ml.matrices",
    "measure_database": "ml4ml.measures",
    "register_measure": "ml4ml.measures",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ml4ml' has no attribute {name!r}")
