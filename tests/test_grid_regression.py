"""RISE's regression control variate: the surrogate's map is exact, and the estimate is RISE's estimand."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable
from perturbx.backend import NUMPY
from perturbx.estimators import MaskAverage
from perturbx.estimators.grid_regression import GridRegression
from perturbx.samplers import RandomGridSampler


def fold(estimator, sampler, score_of_grid, chunk=64):
    for ch in sampler.chunks(chunk):
        masks = ch.materialize(NUMPY, np.float32)
        estimator.update(ch, masks, score_of_grid(ch.grids.reshape(ch.size, -1), masks))
    return estimator.finalize()


def test_mean_cell_weights_are_the_average_mask_per_cell():
    """E[M(u)] = p sum_j Wbar_j(u) = p: the weights of every pixel sum to one over the cells."""
    s = RandomGridSampler((20, 23), 10, (3, 4), 0.5, np.random.default_rng(0))
    w = s.upsampler.mean_cell_weights()
    assert w.shape == (12, 20 * 23)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    brute = np.zeros_like(w)  # every shift, one cell switched on at a time
    (ch, cw), (gh, gw) = s.upsampler.cell, s.upsampler.grid
    ry, rx = s.upsampler._host
    for j in range(12):
        grid = np.zeros((gh, gw))
        grid.flat[j] = 1
        brute[j] = np.mean([(ry[dy:dy + 20] @ grid @ rx[dx:dx + 23].T).ravel()
                            for dy in range(ch) for dx in range(cw)], axis=0)
    np.testing.assert_allclose(w, brute, atol=1e-12)


def test_a_score_linear_in_the_cells_gives_the_exact_map_from_few_masks():
    rng = np.random.default_rng(3)
    coef = rng.normal(size=(49, 2))
    linear = lambda cells, masks: 0.3 + cells @ coef  # noqa: E731
    few = fold(GridRegression(NUMPY, 0.5, n_fit=200), RandomGridSampler((16, 16), 200, (7, 7), 0.5,
                                                                         np.random.default_rng(1)), linear)
    many = fold(MaskAverage(NUMPY, 0.5, control_variate=True),
                RandomGridSampler((16, 16), 100_000, (7, 7), 0.5, np.random.default_rng(2)), linear, chunk=4096)
    scale = np.abs(many).max()
    assert np.abs(few - many).max() < 0.02 * scale   # the ridge shrinks the fit a little; the rest is exact
    mean_cv = fold(MaskAverage(NUMPY, 0.5, control_variate=True),
                   RandomGridSampler((16, 16), 200, (7, 7), 0.5, np.random.default_rng(1)), linear)
    assert np.abs(mean_cv - many).max() > 5 * np.abs(few - many).max()


def test_regression_and_mean_estimates_share_their_limit(rng):
    """For a nonlinear model both estimators converge to the same RISE map (the estimand is unchanged)."""
    w = rng.normal(size=(3, 12, 12))
    model = lambda b: np.tanh((b * w).reshape(len(b), -1).sum(1, keepdims=True) / 10)  # noqa: E731
    x = rng.random((3, 12, 12), dtype=np.float32)
    maps = [perturbx.RISE(n_masks=20_000, grid_size=4, control_variate=kind, random_state=5).explain(
        Callable(model, batch_size=500), x, target=0).attributions for kind in ("regression", "mean")]
    spread = maps[1].max() - maps[1].min()
    assert np.abs(maps[0] - maps[1]).max() < 0.05 * spread


def test_standard_error_and_stopping_work(rng):
    model = lambda b: np.tanh(b.reshape(len(b), -1).mean(1, keepdims=True))  # noqa: E731
    x = rng.random((3, 12, 12), dtype=np.float32)
    e = perturbx.RISE(n_masks=4000, grid_size=4, control_variate="regression", tolerance=0.2,
                      random_state=0).explain(Callable(model), x, target=0)
    assert e.converged and e.n_queries < 4001 and e.estimated_error <= 0.2


@pytest.mark.parametrize("value", ["yes", 2, None])
def test_bad_control_variate(value):
    with pytest.raises(ValueError, match="'control_variate' parameter of RISE must be one of 'regression', 'mean'"):
        perturbx.RISE(control_variate=value)
