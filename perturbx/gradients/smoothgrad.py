"""SmoothGrad and its variants (Smilkov et al. 2017; Adebayo et al. 2018) around any gradient method."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perturbx._utils import check_choice, check_float, check_int, check_random_state

from ._session import Session
from .base import GradientExplainer

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class SmoothGrad(GradientExplainer):
    """Average a gradient method's attributions over copies of the input with Gaussian noise.

    Like Captum's ``NoiseTunnel(base).attribute(nt_type=kind, nt_samples=n_samples,
    stdevs=sigma)``: with ``a_j`` the base attributions of ``x + e_j``, ``e_j ~ N(0, sigma^2)``,

    * ``"smoothgrad"``: ``mean_j a_j``
    * ``"smoothgrad_sq"``: ``mean_j a_j**2``
    * ``"vargrad"``: ``mean_j a_j**2 - (mean_j a_j)**2``

    computed per channel (or per layer cell for class activation maps), then reduced or
    upsampled as the base method does.

    Parameters
    ----------
    base : GradientExplainer
        Any explainer of this module except SmoothGrad, for example ``Saliency()``.
    n_samples : int, default 50
        Noisy copies.
    noise : float, default 0.15
        Noise level relative to the input's range: ``sigma = noise * (x.max() - x.min())``
        (the paper's convention; the range counts as 1 for a constant input).
    kind : {"smoothgrad", "smoothgrad_sq", "vargrad"}, default "smoothgrad"
    samples_per_batch : int, optional
        Noisy copies handed to the base method together (its rows are then batched by the
        adapter's ``batch_size``); default ``max(1, batch_size // n_targets)`` of the adapter.
        Only memory and speed depend on it.
    random_state : int, Generator or None
        Seeds a ``torch.Generator`` on the model's device, kept as ``extras["torch_seed"]``.
        Noise is drawn one copy at a time, so it does not depend on any batch size; Captum's
        ``NoiseTunnel(..., nt_samples_batch_size=1)`` draws the same noise after
        ``torch.manual_seed(torch_seed)``.

    Notes
    -----
    Queries: one row for the input's scores plus the base method's rows for every copy.
    ``extras``: ``raw`` ``(T, *attr_shape)``, ``sigma``, ``torch_seed``, plus the base's own
    extras that do not depend on the input (Grad-CAM's ``layer``).
    """

    def __init__(self, base: GradientExplainer, n_samples: int = 50, noise: float = 0.15,
                 kind: str = "smoothgrad", *, samples_per_batch: int | None = None,
                 random_state: int | np.random.Generator | None = None) -> None:
        if not isinstance(base, GradientExplainer) or isinstance(base, SmoothGrad):
            raise TypeError(f"The 'base' parameter of SmoothGrad must be a perturbx.gradients explainer "
                            f"other than SmoothGrad, e.g. Saliency(). Got {type(base).__name__}.")
        self.base = base
        self.n_samples = check_int(n_samples, "n_samples", "SmoothGrad")
        self.noise = check_float(noise, "noise", "SmoothGrad", low=0.0, high=np.inf, high_open=True)
        self.kind = check_choice(kind, "kind", "SmoothGrad", KINDS)
        self.samples_per_batch = (None if samples_per_batch is None else
                                  check_int(samples_per_batch, "samples_per_batch", "SmoothGrad"))
        check_random_state(random_state, owner="The 'random_state' parameter of SmoothGrad")
        self.random_state = random_state

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        seed = int(check_random_state(self.random_state).integers(0, 2**63 - 1))
        generator = torch.Generator(device=xs.device).manual_seed(seed)
        span = float(session.x.max() - session.x.min()) or 1.0
        sigma = self.noise * span
        session.memo["smoothgrad"] = {"sigma": sigma, "torch_seed": seed}
        per_batch = self.samples_per_batch or max(1, session.adapter.batch_size // session.n_targets)
        return torch.stack([self._smooth(session, x, sigma, generator, per_batch) for x in xs])

    def _smooth(self, session: Session, x: torch.Tensor, sigma: float, generator: torch.Generator,
                per_batch: int) -> torch.Tensor:
        """Noise statistics ``(T, *attr_shape)`` for one sample ``x``."""
        total = total_sq = None
        std = torch.tensor(sigma, device=x.device).repeat((1, *x.shape))
        for lo in range(0, self.n_samples, per_batch):
            k = min(per_batch, self.n_samples - lo)
            noisy = torch.cat([x[None] + torch.normal(0.0, std, generator=generator) for _ in range(k)])
            attr = self.base._attribute(session, noisy)    # (k, T, *attr_shape)
            part, part_sq = attr.sum(dim=0), attr.pow(2).sum(dim=0)
            total = part if total is None else total + part
            total_sq = part_sq if total_sq is None else total_sq + part_sq
        mean, mean_sq = total / self.n_samples, total_sq / self.n_samples
        if self.kind == "smoothgrad":
            return mean
        if self.kind == "smoothgrad_sq":
            return mean_sq
        return mean_sq - mean * mean

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        return self.base._finish(session, raw)

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        extras = dict(session.memo["smoothgrad"])
        if "layer" in session.memo:
            extras["layer"] = session.memo["layer"]
        return extras
