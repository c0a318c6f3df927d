"""Inputs that make tmeasures 1.2.11's pytorch measures see given activations exactly.

The dataset's items are tokens (sample, grid position), the transformation set moves a
token to grid position k; a model (``tm.pytorch.ActivationsModule``) that returns the
activations at ``tokens[:, 1]`` (grid position) and ``tokens[:, 0]`` (sample) then feeds
tmeasures' own iterators, running statistics and divisions exactly those values.
"""

from __future__ import annotations


def token_inputs(n_params: int, n_samples: int):
    """(dataset of ``n_samples`` tokens at the identity, transformation set of the grid
    positions 0 .. n_params-1)."""
    import torch
    from tmeasures.pytorch.transformations import PyTorchTransformation, PyTorchTransformationSet

    identity = n_params // 2

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return n_samples

        def __getitem__(self, sample):
            return torch.tensor([float(sample), float(identity)])

    class ToGridValue(PyTorchTransformation):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def __call__(self, token):
            moved = token.clone()
            moved[1] = self.k
            return moved

        def parameters(self):
            return torch.tensor([float(self.k)])

    return Tokens(), PyTorchTransformationSet([ToGridValue(k) for k in range(n_params)])
