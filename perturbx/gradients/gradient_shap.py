"""GradientSHAP (Lundberg & Lee 2017) and expected gradients (Erion et al. 2021): IG with baselines drawn from data."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from perturbx._utils import check_float, check_int, check_random_state

from ._baselines import DEFAULT_DISTRIBUTION, check_distribution, resolve_distribution
from ._session import Session, run_gradients
from .base import PixelGradient


def draw(rng: np.random.Generator, n_baselines: int, n_samples: int, shape: tuple[int, ...],
         sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The draws of one sample: baseline indices ``(n,)``, path positions ``alpha`` ``(n,)``, noise ``(n, *shape)``.

    Drawn in Captum's order (indices, noise, positions) from ``rng``; the noise is all
    zeros when ``sigma == 0`` (nothing is drawn for it then).
    """
    index = rng.integers(0, n_baselines, size=n_samples)
    noise = (rng.normal(0.0, sigma, size=(n_samples, *shape)) if sigma > 0
             else np.zeros((n_samples, *shape))).astype(np.float32)
    alpha = rng.uniform(0.0, 1.0, size=n_samples)
    return index, alpha, noise


class GradientSHAP(PixelGradient):
    """``mean_k (x + e_k - r_k) * d f_t / d x (alpha_k (x + e_k) + (1 - alpha_k) r_k)`` over random draws.

    Each of ``n_samples`` draws takes a reference ``r_k`` from the baseline distribution,
    a position ``alpha_k ~ U(0, 1)`` on the straight path and Gaussian noise ``e_k`` on the
    input; the average estimates the expected gradients of Erion et al. (integrated
    gradients averaged over references from the data), whose attributions sum in
    expectation to ``f_t(x) - E_r f_t(r)``. Equals Captum's ``GradientShap(model).attribute(
    x, baselines=R, n_samples=n_samples, stdevs=sigma, target=t)`` when Captum is given the
    same draws (:func:`draw`); every target uses the same draws.

    Parameters
    ----------
    baselines : array (B, *sample_shape) or sequence of baseline specs, default 8 x "noise"
        The reference distribution (training images, or :mod:`perturbx.baselines` specs
        resolved for each sample).
    n_samples : int, default 50
        Draws (rows per target).
    noise : float, default 0.0
        Noise level relative to the input's range, as in :class:`SmoothGrad`:
        ``sigma = noise * (x.max() - x.min())``; 0 gives expected gradients.
    internal_batch_size : int, optional
        Rows per forward/backward pass; defaults to the adapter's ``batch_size``.
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
    random_state : int, Generator or None
        Seeds the draws (and ``"noise"`` baseline specs).

    Notes
    -----
    Queries: ``n_samples`` rows per target, one for ``f(x)`` and ``B`` for the references'
    scores. ``extras``: ``raw`` ``(T, *sample_shape)``, ``baselines`` ``(B, *sample_shape)``,
    ``baseline_index`` and ``alpha`` ``(n_samples,)`` (the draws), ``sigma``,
    ``score_difference`` ``(T,)`` = ``f(x) - mean_j f(r_j)`` and ``completeness_gap``
    ``(T,)`` = ``sum(attributions) - score_difference`` (zero only in expectation).
    """

    def __init__(self, baselines: object = DEFAULT_DISTRIBUTION, n_samples: int = 50, noise: float = 0.0, *,
                 internal_batch_size: int | None = None, reduction: str = "sum",
                 random_state: int | np.random.Generator | None = None) -> None:
        owner = type(self).__name__
        super().__init__(reduction=reduction)
        self.baselines = check_distribution(baselines, owner)
        self.n_samples = check_int(n_samples, "n_samples", owner)
        self.noise = check_float(noise, "noise", owner, low=0.0, high=np.inf, high_open=True)
        self.internal_batch_size = (None if internal_batch_size is None else
                                    check_int(internal_batch_size, "internal_batch_size", owner))
        check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
        self.random_state = random_state

    def _setup(self, session: Session) -> dict[str, Any]:
        """References, draws and sigma of this call (made once, shared by every target)."""
        key = f"gradient_shap:{id(self)}"
        if key not in session.memo:
            rng = check_random_state(self.random_state)
            refs = resolve_distribution(self.baselines, session, rng, type(self).__name__)
            sigma = self.noise * (float(session.x.max() - session.x.min()) or 1.0)
            index, alpha, noise = draw(rng, len(refs), self.n_samples, session.x.shape, sigma)
            session.memo[key] = {"refs": refs, "index": index, "alpha": alpha, "sigma": sigma,
                                 "noise": torch.as_tensor(noise, device=refs.device)}
        return session.memo[key]

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        setup = self._setup(session)
        dev = xs.device
        refs = setup["refs"][torch.as_tensor(setup["index"], device=dev)]         # (n, ...)
        alpha = torch.as_tensor(setup["alpha"], dtype=torch.float32, device=dev).view(-1, *([1] * (xs.ndim - 1)))
        n, n_targets = self.n_samples, session.n_targets
        total = torch.zeros((len(xs) * n_targets, *xs.shape[1:]), dtype=torch.float32, device=dev)
        items = torch.arange(len(xs) * n_targets * n, device=dev)              # item = (sample, target, draw)

        def noisy(i: torch.Tensor) -> torch.Tensor:
            return xs[i // (n_targets * n)] + setup["noise"][i % n]

        def make_rows(lo: int, hi: int) -> torch.Tensor:
            i = items[lo:hi]
            k = i % n
            return alpha[k] * noisy(i) + (1.0 - alpha[k]) * refs[k]

        def consume(chunk) -> None:
            i = items[chunk.lo:chunk.hi]
            total.index_add_(0, i // n, (noisy(i) - refs[i % n]) * chunk.grad)

        run_gradients(session, len(items), make_rows, (items // n) % n_targets, consume,
                      batch_size=self.internal_batch_size)
        return (total / n).view(len(xs), n_targets, *xs.shape[1:])

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        setup = self._setup(session)
        difference = session.reference - session.values_of(setup["refs"]).mean(axis=0)
        sums = raw.detach().to("cpu", torch.float64).reshape(len(raw), -1).sum(dim=1).numpy()
        return {"baselines": setup["refs"].cpu().numpy(), "baseline_index": setup["index"], "alpha": setup["alpha"],
                "sigma": setup["sigma"], "score_difference": difference, "completeness_gap": sums - difference}


class ExpectedGradients(GradientSHAP):
    """Expected gradients (Erion et al. 2021): :class:`GradientSHAP` without input noise.

    ``mean_k (x - r_k) * d f_t / d x (r_k + alpha_k (x - r_k))`` with references ``r_k``
    drawn from ``baselines`` and ``alpha_k ~ U(0, 1)``: integrated gradients averaged over
    references from the data, estimated with one random path position per draw.

    Parameters
    ----------
    baselines : array (B, *sample_shape) or sequence of baseline specs, default 8 x "noise"
    n_samples : int, default 50
    internal_batch_size : int, optional
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"
    random_state : int, Generator or None

    Notes
    -----
    Queries and ``extras`` as :class:`GradientSHAP`.
    """

    def __init__(self, baselines: object = DEFAULT_DISTRIBUTION, n_samples: int = 50, *,
                 internal_batch_size: int | None = None, reduction: str = "sum",
                 random_state: int | np.random.Generator | None = None) -> None:
        super().__init__(baselines, n_samples, 0.0, internal_batch_size=internal_batch_size, reduction=reduction,
                         random_state=random_state)
