"""Adversarial perturbations shared by training and probing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fgsm(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float,
         *, normalize=None) -> torch.Tensor:
    """Fast gradient sign method: ``clamp(x + epsilon * sign(grad_x CE(model(x), y)), 0, 1)``.

    images : (batch, channel, height, width) float in [0, 1]
    labels : (batch,) int64
    normalize : optional (mean, std) applied inside, after the perturbation point.
    Returns the perturbed images, detached, same shape and device. The model's
    train/eval mode is left as it was.
    """
    if epsilon <= 0:
        return images
    x = images.detach().clone().requires_grad_(True)
    inputs = x if normalize is None else _normalize(x, *normalize)
    with torch.enable_grad():
        loss = F.cross_entropy(model(inputs), labels)
        (grad,) = torch.autograd.grad(loss, x)
    return (images + epsilon * grad.sign()).clamp_(0.0, 1.0).detach()


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    return (x - mean) / std
