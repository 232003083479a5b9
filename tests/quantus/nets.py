"""The small CNN both venvs build from the same weights (torch only: imported by the Quantus runner too)."""

from __future__ import annotations

import numpy as np


def make_net(weights: dict[str, np.ndarray] | None = None, *, channels: int = 1, n_classes: int = 4, seed: int = 0,
             size: int = 16):
    """A (channels, size, size) -> n_classes CNN; random with ``seed`` or loaded from ``weights`` (name -> array)."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 6, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 6, 3, padding=1, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * (size // 2) ** 2, n_classes))
    if weights is not None:
        net.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    return net.eval()


def weights_of(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
