"""Which submodules of a model are 2-d convolutions the probe can record (the bottom of
the model files: ``checkpoints`` and ``export_files`` both ask it).

``conv_layers(model)``: ``nn.Conv2d`` modules (nested ones too), and the submodules of a
wrapped program (TorchScript, ``torch.export``, ``torch.fx``) whose output is a
convolution's; a wrapper that knows its own (``TorchScriptModel``, ``FixedBatchModel``)
answers through its ``conv_layers`` method.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CONV_KINDS", "CONV_TARGETS", "conv_layers"]

# graph operators whose output is a 2-d convolution's (TorchScript kinds, torch.export /
# torch.fx targets as ``str(target)`` starts)
CONV_KINDS = frozenset({"aten::conv2d", "aten::_convolution", "aten::convolution"})
CONV_TARGETS = ("aten.conv2d", "aten.convolution", "aten._convolution")


def conv_layers(model) -> list[str]:
    """Names of the model's 2-d convolutions the probe can record, in order (the default
    layers are the last of them): ``nn.Conv2d`` modules (nested ones too), the submodules
    of a TorchScript model (``TorchScriptModel``) and of a ``torch.export`` program
    (unflattened) or ``torch.fx`` graph module whose output is a convolution's."""
    own = getattr(model, "conv_layers", None)
    if callable(own):
        return list(own())
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) or (name and _graph_ends_in_conv(module))]


def _graph_ends_in_conv(module) -> bool:
    """Whether ``module`` runs an fx graph (an unflattened ``torch.export`` submodule, a
    ``GraphModule``) whose output is a convolution node's."""
    graph = getattr(module, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return False
    output = next((n for n in reversed(graph.nodes) if n.op == "output"), None)
    value = output.args[0] if output is not None and output.args else None
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return isinstance(value, torch.fx.Node) and value.op == "call_function" and \
        str(value.target).startswith(CONV_TARGETS)
