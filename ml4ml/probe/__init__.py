"""Probe stage: transformation families, one model's responses, and ``probe_pipeline``.

Modules: ``transforms`` (rotation, scaling, brightness, ... and user families; nearest or
bilinear), ``corruptions`` (the 15 common corruptions of ImageNet-C at severities 0..5:
``corrupt``), ``generators`` (each family's derivative at its identity), ``lie`` (the Lie
derivative of the softmax, ``probe_model(..., lie_derivative=True)``),
``responses`` (``probe_model``: softmax and layer statistics over a grid; which layers:
``zoo.layers.select_layers``), ``stage``
(every trained model of a pipeline into ``probes/<suite>/<transform>``). Exports load
lazily (torch).
"""

from ml4ml._lazy import lazy_exports

__all__ = ["probe_model", "layer_statistics", "select_layers", "forward_sizes",
           "Transform", "get_transform", "register_transform", "transform_names",
           "validate_grid", "with_interpolation", "probe_pipeline", "corrupt", "CORRUPTIONS",
           "severity_parameters"]

__getattr__ = lazy_exports(__name__, {
    "probe_model": "ml4ml.probe.responses",
    "layer_statistics": "ml4ml.probe.responses",
    "select_layers": "ml4ml.zoo.layers",
    "forward_sizes": "ml4ml.probe.responses",
    "Transform": "ml4ml.probe.transforms",
    "get_transform": "ml4ml.probe.transforms",
    "register_transform": "ml4ml.probe.transforms",
    "transform_names": "ml4ml.probe.transforms",
    "validate_grid": "ml4ml.probe.transforms",
    "with_interpolation": "ml4ml.probe.transforms",
    "probe_pipeline": "ml4ml.probe.stage",
    "corrupt": "ml4ml.probe.corruptions",
    "CORRUPTIONS": "ml4ml.probe.corruptions",
    "severity_parameters": "ml4ml.probe.corruptions",
})
