"""RISE's regression control variate: the surrogate's map is exact, and the estimate is RISE's estimand."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable
from perturbx.backend import NUMPY
from perturbx.estimators import MaskAverage, grid_regression
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
    few = fold(GridRegression(NUMPY, 0.5, n_fit=200, features="cells"),
               RandomGridSampler((16, 16), 200, (7, 7), 0.5, np.random.default_rng(1)), linear)
    many = fold(MaskAverage(NUMPY, 0.5, control_variate=True),
                RandomGridSampler((16, 16), 100_000, (7, 7), 0.5, np.random.default_rng(2)), linear, chunk=4096)
    scale = np.abs(many).max()
    assert np.abs(few - many).max() < 0.02 * scale   # the ridge shrinks the fit a little; the rest is exact
    mean_cv = fold(MaskAverage(NUMPY, 0.5, control_variate=True),
                   RandomGridSampler((16, 16), 200, (7, 7), 0.5, np.random.default_rng(1)), linear)
    assert np.abs(mean_cv - many).max() > 5 * np.abs(few - many).max()


def exact_rise_map(spatial, grid, p, score_weights, intercept):
    """Brute-force RISE map of the score ``intercept + <M, w_t>`` (linear in the mask's pixels), (T, H * W).

    ``E[M(v) M(u)]`` summed over every shift of the upsampled grid, with
    ``E[c_i c_j] = p^2 + p (1 - p) [i = j]`` for the independent cells; then
    ``E[f M(u)] / p = intercept + sum_v w(v) E[M(v) M(u)] / p``.
    """
    sampler = RandomGridSampler(spatial, 1, grid, p, np.random.default_rng(0))
    (h, w), (ch, cw) = spatial, sampler.upsampler.cell
    ry, rx = sampler.upsampler._host
    second = np.zeros((h * w, h * w))
    for dy in range(ch):
        for dx in range(cw):
            weights = np.einsum("ya,xb->yxab", ry[dy:dy + h], rx[dx:dx + w]).reshape(h * w, -1)
            total = weights.sum(axis=1)
            second += p * p * np.outer(total, total) + p * (1 - p) * weights @ weights.T
    second /= ch * cw
    return intercept[:, None] + score_weights.reshape(len(score_weights), -1) @ second / p


def test_a_score_linear_in_the_block_means_gives_the_exact_map(monkeypatch):
    """The block surrogate's map is exact: a score linear in the mask's block means, non-square image and grid."""
    monkeypatch.setattr(grid_regression, "RIDGE", 1e-12)      # no shrinkage: the fit is exact
    spatial, grid = (18, 23), (4, 5)
    rows, cols = grid_regression._block_average(18, 5), grid_regression._block_average(23, 6)
    coef = np.random.default_rng(3).normal(size=(5 * 6, 2))
    pixel_weights = np.einsum("abt,ay,bx->tyx", coef.reshape(5, 6, 2), rows, cols)       # (T, H, W)
    score = lambda cells, masks: 0.3 + masks.reshape(len(masks), -1) @ pixel_weights.reshape(2, -1).T  # noqa: E731
    few = fold(GridRegression(NUMPY, 0.5, n_fit=10_000), RandomGridSampler(spatial, 300, grid, 0.5,
                                                                           np.random.default_rng(1)), score)
    exact = exact_rise_map(spatial, grid, 0.5, pixel_weights, np.full(2, 0.3))
    np.testing.assert_allclose(few.reshape(2, -1), exact, rtol=0, atol=1e-6 * np.abs(exact).max())  # float32 masks
    cells = fold(GridRegression(NUMPY, 0.5, n_fit=10_000, features="cells"),
                 RandomGridSampler(spatial, 300, grid, 0.5, np.random.default_rng(1)), score)
    assert np.abs(cells.reshape(2, -1) - exact).max() > 1e-3 * np.abs(exact).max()   # the cells cannot express it


def test_block_features_are_the_block_means_of_the_masks():
    sampler = RandomGridSampler((21, 17), 40, (3, 4), 0.5, np.random.default_rng(2))
    chunk = next(sampler.chunks(40))
    masks = chunk.materialize(NUMPY, np.float64)
    rows, cols = grid_regression._block_average(21, 4), grid_regression._block_average(17, 5)
    brute = np.einsum("ay,nyx,bx->nab", rows, masks, cols).reshape(40, -1)
    np.testing.assert_allclose(grid_regression._Blocks(sampler.upsampler).features(chunk), brute, atol=1e-12)
    assert rows.sum(axis=1) == pytest.approx(1.0) and (rows > 0).sum() == 21      # a partition, averaged


def test_regression_and_mean_estimates_share_their_limit(rng):
    """For a nonlinear model both estimators converge to the same RISE map (the estimand is unchanged)."""
    w = rng.normal(size=(3, 12, 12))
    model = lambda b: np.tanh((b * w).reshape(len(b), -1).sum(1, keepdims=True) / 10)  # noqa: E731
    x = rng.random((3, 12, 12), dtype=np.float32)
    maps = [perturbx.RISE(n_masks=20_000, grid_size=4, control_variate=kind, random_state=5).explain(
        Callable(model, batch_size=500), x, target=0).attributions for kind in ("regression", "mean")]
    spread = maps[1].max() - maps[1].min()
    assert np.abs(maps[0] - maps[1]).max() < 0.05 * spread


def test_the_map_does_not_depend_on_the_chunk_size(rng):
    """The surrogate is fitted on exactly the first n_fit masks, wherever the chunks end."""
    w = rng.normal(size=(2, 16, 16))
    score = lambda cells, masks: np.tanh(masks.reshape(len(masks), -1) @ w.reshape(2, -1).T / 20)  # noqa: E731
    maps = [fold(GridRegression(NUMPY, 0.5, n_fit=300), RandomGridSampler((16, 16), 700, (4, 4), 0.5,
                                                                           np.random.default_rng(4)), score, chunk)
            for chunk in (64, 37, 700)]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=0, atol=1e-6 * np.abs(maps[0]).max())  # float32 sums
    split = GridRegression(NUMPY, 0.5, n_fit=300)
    fold(split, RandomGridSampler((16, 16), 700, (4, 4), 0.5, np.random.default_rng(4)), score, 37)
    assert split.coef is not None and not split._kept   # fitted, and nothing kept after the fit


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


def test_isotonic_link_follows_a_saturating_score():
    """A probability, the logistic of a score linear in the block means: the isotonic link's estimate is closest."""
    rng = np.random.default_rng(6)
    spatial, grid = (16, 16), (4, 4)
    rows, cols = grid_regression._block_average(16, 5), grid_regression._block_average(16, 5)
    weights = np.einsum("ab,ay,bx->yx", rng.normal(size=(5, 5)), rows, cols).ravel()
    sample = next(RandomGridSampler(spatial, 4000, grid, 0.5, np.random.default_rng(3)).chunks(4000))
    eta = sample.materialize(NUMPY, np.float64).reshape(4000, -1) @ weights
    weights, offset = 3 * weights / eta.std(), -3 * eta.mean() / eta.std()     # logits of spread 3 around 0
    score = lambda cells, masks: 1 / (1 + np.exp(-(masks.reshape(len(masks), -1) @ weights + offset)))[:, None]  # noqa: E731
    reference = fold(MaskAverage(NUMPY, 0.5, control_variate=True),
                     RandomGridSampler(spatial, 200_000, grid, 0.5, np.random.default_rng(2)), score, chunk=8192)
    errors = {}
    for link in ("linear", "isotonic"):
        maps = [fold(GridRegression(NUMPY, 0.5, link=link), RandomGridSampler(spatial, 600, grid, 0.5,
                                                                             np.random.default_rng(s)), score)
                for s in range(10, 16)]
        errors[link] = np.mean([np.linalg.norm(m - reference) for m in maps])
    assert errors["isotonic"] < 0.5 * errors["linear"], errors   # measured 0.027 against 0.077


def test_isotonic_link_keeps_a_linear_score_exact(monkeypatch):
    """For a score linear in the block means the fitted link is the identity: the map stays (almost) exact.

    Not to rounding: the link is clipped outside the linear scores of the masks it was fitted
    on, and the remainder's map is a Monte Carlo estimate; both leave ~5e-4 of the map's scale.
    """
    monkeypatch.setattr(grid_regression, "RIDGE", 1e-12)
    spatial, grid = (18, 23), (4, 5)
    rows, cols = grid_regression._block_average(18, 5), grid_regression._block_average(23, 6)
    coef = np.random.default_rng(3).normal(size=(5 * 6, 1))
    pixel_weights = np.einsum("abt,ay,bx->tyx", coef.reshape(5, 6, 1), rows, cols)
    score = lambda cells, masks: 0.3 + masks.reshape(len(masks), -1) @ pixel_weights.reshape(1, -1).T  # noqa: E731
    est = fold(GridRegression(NUMPY, 0.5, n_fit=300, link="isotonic"),
               RandomGridSampler(spatial, 300, grid, 0.5, np.random.default_rng(1)), score)
    exact = exact_rise_map(spatial, grid, 0.5, pixel_weights, np.full(1, 0.3))
    np.testing.assert_allclose(est.reshape(1, -1), exact, rtol=0, atol=2e-3 * np.abs(exact).max())


def test_mask_average_without_masks_equals_the_materialised_one():
    sampler = RandomGridSampler((21, 17), 500, (3, 4), 0.5, np.random.default_rng(8))
    chunk = next(sampler.chunks(500))
    values = np.random.default_rng(9).normal(size=(500, 2))
    masks = chunk.materialize(NUMPY, np.float64).reshape(500, -1)
    brute = (values - values.mean(0)).T @ masks / (499 * 0.5) + values.mean(0)[:, None]
    head, tail = grid_regression._split(chunk, 200)
    average = grid_regression._ShiftSums([head, tail]).average(values, 0.5)
    np.testing.assert_allclose(average, brute, rtol=0, atol=1e-12)


def test_bad_link():
    with pytest.raises(ValueError, match="'link' parameter of GridRegression must be one of .* Got 'logit'"):
        GridRegression(NUMPY, 0.5, link="logit")


def test_bad_features():
    with pytest.raises(ValueError, match="'features' parameter of GridRegression must be one of .* Got 'pixels'"):
        GridRegression(NUMPY, 0.5, features="pixels")


@pytest.mark.parametrize("seed", range(6))
def test_the_isotonic_link_equals_scikit_learns(seed):
    """IsotonicFit (pool adjacent violators, written to spare the 80 MB import) against scikit-learn's
    IsotonicRegression(out_of_bounds="clip"): saturating scores, ties in x, predictions inside and outside."""
    from sklearn.isotonic import IsotonicRegression

    from perturbx.estimators.isotonic import IsotonicFit

    rng = np.random.default_rng(seed)
    x = rng.normal(size=400)
    x[:60] = np.round(x[:60], 1)  # tied x: their y are averaged first
    y = 1 / (1 + np.exp(-3 * x)) + rng.normal(scale=0.2, size=400)
    z = np.concatenate([rng.normal(scale=1.5, size=300), [x.min() - 1, x.max() + 1], x[:20]])
    ours = IsotonicFit.fit(x, y).predict(z)
    theirs = IsotonicRegression(out_of_bounds="clip").fit(x, y).predict(z)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert np.all(np.diff(IsotonicFit.fit(x, y).knots_y) >= 0)
