"""Models that pass `ml4ml add-models`' checks (a few images at a time, at the identity)
and fail later, for the tests that need one bad model among good ones."""

from pathlib import Path

# the module a test writes beside its spec (module:badnets:<Class>); a probe of 16 images x
# 5 angles forwards 80 at a time
BADNETS = '''
import logging
import warnings

import torch
from torch import nn


class Small(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.head = nn.Linear(4, num_classes)

    def logits(self, x):
        return self.head(self.conv2(torch.relu(self.conv1(x))).mean(dim=(2, 3)))


class Raises(Small):
    """Raises on batches larger than 20, after a warning and an error in distributed's log
    (as a worker's heartbeat failure would be)."""

    def forward(self, x):
        if x.shape[0] > 20:
            warnings.warn("a warning from the forward of Raises")
            logging.getLogger("distributed.worker").error(
                "Failed to communicate with scheduler during heartbeat (a test's message)")
            raise RuntimeError(f"exploded on a batch of {x.shape[0]}")
        return self.logits(x)


class NaNs(Small):
    """NaN logits on batches larger than 20."""

    def forward(self, x):
        out = self.logits(x)
        return out * float("nan") if x.shape[0] > 20 else out


class Dies(Small):
    """Kills its own process on batches larger than 20 (as the out-of-memory killer would)."""

    def forward(self, x):
        if x.shape[0] > 20:
            import os

            os._exit(3)
        return self.logits(x)


class Flat(Small):
    """The same outputs and activations for every image: every variance matrix is 0."""

    def __init__(self, num_classes=10, in_channels=1):
        super().__init__(num_classes, in_channels)
        for parameter in self.parameters():
            nn.init.zeros_(parameter)
        nn.init.constant_(self.conv1.bias, 0.5)
        nn.init.constant_(self.head.bias, 0.1)

    def forward(self, x):
        return self.logits(x)
'''


def write_badnets(folder) -> Path:
    """``folder/badnets.py``: the module of the classes above."""
    path = Path(folder) / "badnets.py"
    path.write_text(BADNETS)
    return path
