"""The Lie derivative of a model's softmax output along a transformation's generator.

Gruver, Finzi, Goldblum & Wilson, *The Lie Derivative for Measuring Learned Equivariance*
(ICLR 2023): for an invariant classifier ``f`` and a one-parameter family ``T_p`` with
identity ``p0``, the Lie derivative at an image ``x`` is ``d f(T_p x) / dp`` at ``p0``. Here
``f`` is the softmax of the model's logits (the probe's ``prob``) and the derivative is
forward-mode autodiff (``torch.func.jvp``) of the model along the image tangent
``v = d T_p x / dp`` (``Transform.derivative``, ``probe.generators``):

    lee(sample) = (1 / K) sum_k |J_f(x) v|_k        (K classes)

in probability per parameter unit (per degree for rotation), reduced per sample as their
``lee/e2e_lee.py`` reduces it (the mean over classes of its absolute value) and as
``lee_fd`` reduces its finite difference (docs/measures.md), so that the mean over samples
of ``lee`` is the measure ``lee`` and compares with ``lee_fd``.
"""

from __future__ import annotations

import torch

from ml4ml.errors import InputError
from ml4ml.probe.transforms import Transform, lie_derivative_refusal

__all__ = ["check_lie_derivative", "softmax_lie_derivative"]


def check_lie_derivative(transform: Transform) -> None:
    """InputError (one line naming it) for a family without a derivative."""
    why = lie_derivative_refusal(transform)
    if why is not None:
        raise InputError(why, field="lie_derivative",
                         hint="probe it without lie_derivative, or register the family "
                              "with derivative=")


def softmax_lie_derivative(model, images: torch.Tensor, transform: Transform,
                           norm=None) -> torch.Tensor:
    """Per image, the mean over classes of ``|d softmax(model(T_p x)) / dp|`` at the
    identity: (n,) float64.

    images : (n, channel, height, width) in [0, 1], on the model's device and dtype;
    norm : optional ``(mean, std)`` tensors applied after the transformation, as the
    probe does. The model runs in whatever mode it is in (the probe's: eval).
    """
    tangent = transform.derivative(images)
    if not isinstance(tangent, torch.Tensor) or tangent.shape != images.shape:
        found = tuple(tangent.shape) if isinstance(tangent, torch.Tensor) else \
            type(tangent).__name__
        raise InputError(f"the derivative of transform {transform.name!r} must return "
                         f"(batch, channel, height, width) = {tuple(images.shape)}; found "
                         f"{found}", field="transform")
    tangent = tangent.to(images.dtype)

    def probabilities(x):
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        return torch.softmax(model(x), dim=-1)

    with torch.no_grad():
        try:
            _, derivative = torch.func.jvp(probabilities, (images,), (tangent,))
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__
            raise InputError(f"the model cannot be differentiated forward (torch.func.jvp) "
                             f"for the Lie derivative: {first}", field="lie_derivative") \
                from None
    return derivative.detach().to(torch.float64).abs().mean(dim=-1).cpu()
