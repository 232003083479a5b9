"""Early stopping in the engine: the relative-error measure, checkpoints, budgets, LIME's jackknife."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from perturbx import engine
from perturbx.engine import QueryBudgetError, RunResult, Stopping, relative_error
from perturbx.estimators.linear_surrogate import WeightedRidge, cosine_kernel
from perturbx.explainers.lime import LIME
from perturbx.samplers.coalitions import CoalitionChunk, SegmentMap

from .conftest import SpyAdapter, linear_model

SEGMENTS = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 4, axis=0), 4, axis=1)  # 16 blocks of 4 x 4 px


def test_relative_error_by_hand():
    a = np.array([[1.0, 3.0, 5.0, 7.0]])           # centred norm sqrt(9 + 1 + 1 + 9) = sqrt(20)
    se = np.array([[1.0, 1.0, 1.0, 1.0]])          # norm 2
    assert relative_error(a, se) == pytest.approx(2 / math.sqrt(20))
    assert relative_error(a + 100.0, se) == pytest.approx(2 / math.sqrt(20))   # offsets do not count
    two = relative_error(np.vstack([a, 2 * a]), np.vstack([se, se]))
    assert two == pytest.approx(2 / math.sqrt(20))                               # the worse target
    assert relative_error(np.full((1, 4), 3.0), np.zeros((1, 4))) == 0.0         # constant, exact
    assert relative_error(np.full((1, 4), 3.0), np.ones((1, 4))) == math.inf     # constant, noisy
    assert relative_error(a, np.full((1, 4), np.nan)) == math.inf                # unknown error


def test_jackknife_is_sklearn_ridge_without_each_group():
    """Each replicate is the ridge fitted without one group (the others weighted G/(G-1))."""
    rng = np.random.default_rng(3)
    m, n, groups = 6, 161, 4
    z = (rng.random((n, m)) < 0.5).astype(np.uint8)
    y = z @ rng.normal(size=(m, 1)) + 0.3 * rng.normal(size=(n, 1))
    seg = np.arange(m)[None]
    est = WeightedRidge(seg, np.zeros(1), kernel_width=0.25, alpha=1.0, n_groups=groups)
    for start in range(0, n, 50):
        est.update(CoalitionChunk(z[start:start + 50], None, None, SegmentMap(seg)), None, y[start:start + 50])
    beta, se = est.standard_error()
    full = np.vstack([np.ones((1, m)), z])
    target = np.vstack([np.zeros((1, 1)), y])[:, 0]
    w = cosine_kernel(full.astype(float), 0.25)
    np.testing.assert_allclose(beta[0], Ridge(alpha=1.0).fit(full, target, sample_weight=w).coef_, atol=1e-10)
    reps = []
    for g in range(groups):
        keep = np.r_[True, np.arange(n) % groups != g]
        scale = np.where(np.arange(n + 1) == 0, 1.0, groups / (groups - 1))
        reps.append(Ridge(alpha=1.0).fit(full[keep], target[keep], sample_weight=(w * scale)[keep]).coef_)
    reps = np.array(reps)
    expected = np.sqrt((groups - 1) / groups * ((reps - reps.mean(axis=0)) ** 2).sum(axis=0))
    np.testing.assert_allclose(se[0], expected, rtol=1e-8)


def noisy_additive(rng_seed: int):
    """Scores: a fixed additive function of the 16 blocks plus a fixed pseudo-random non-additive term."""
    weights = np.random.default_rng(rng_seed).normal(size=(2, 1, 16, 16))
    base = linear_model(weights)

    def fn(batch):
        wiggle = np.sin(37.0 * batch.reshape(len(batch), -1).sum(axis=1, keepdims=True))
        return base(batch) + 3.0 * wiggle
    return fn


def test_lime_stops_when_converged_and_is_reproducible():
    x = np.ones((1, 16, 16))
    kw = {"n_samples": 4000, "segmentation": SEGMENTS, "baseline": 0.0, "tolerance": 0.15, "random_state": 5}
    runs = [LIME(**kw).explain(SpyAdapter(noisy_additive(0), batch_size=32, input_layout="CHW"), x, target=[0, 1])
            for _ in range(2)]
    e = runs[0]
    assert e.converged and e.estimated_error <= 0.15
    assert e.n_queries < 4000
    np.testing.assert_array_equal(e.attributions, runs[1].attributions)
    assert e.n_queries == runs[1].n_queries
    history = e.convergence_history
    assert history[-1, 1] == e.estimated_error and (history[:-1, 1] > 0.15).all()
    assert history[0, 0] >= 100 and (np.diff(history[:, 0]) > 0).all()
    # the stopped run is the plain run on the same first samples
    plain = LIME(n_samples=e.n_queries, segmentation=SEGMENTS, baseline=0.0, random_state=5).explain(
        SpyAdapter(noisy_additive(0), batch_size=32), x, target=[0, 1])
    np.testing.assert_allclose(e.attributions, plain.attributions, atol=1e-12)


def test_constant_model_stops_at_the_first_check():
    model = SpyAdapter(lambda b: np.tile([[0.2, 0.8]], (len(b), 1)), batch_size=32)
    e = LIME(n_samples=2000, segmentation=SEGMENTS, baseline=0.0, tolerance=0.01, min_queries=50,
             random_state=0).explain(model, np.ones((1, 16, 16)))
    assert e.converged and e.estimated_error == 0.0
    assert e.n_queries == 1 + 64       # the first batch end at or after 50 samples
    np.testing.assert_array_equal(e.attributions, 0.0)


@pytest.mark.parametrize(("max_queries", "batch"), [(300, 32), (257, 64), (1000, 7)])
def test_max_queries_is_never_exceeded(max_queries, batch):
    model = SpyAdapter(noisy_additive(1), batch_size=batch)
    e = LIME(n_samples=5000, segmentation=SEGMENTS, baseline=0.0, tolerance=1e-6, max_queries=max_queries,
             random_state=0).explain(model, np.ones((1, 16, 16)))
    assert not e.converged
    assert e.n_queries == max_queries     # the budget's prefix of the stream, to the last query
    assert sum(model.batch_sizes) == e.n_queries


def test_without_tolerance_nothing_changes():
    model = SpyAdapter(noisy_additive(2), batch_size=32)
    e = LIME(n_samples=300, segmentation=SEGMENTS, baseline=0.0, random_state=0).explain(model, np.ones((1, 16, 16)))
    assert e.n_queries == 300 and "converged" not in e.extras
    with pytest.raises(QueryBudgetError, match="needs 299 perturbed queries but only 199 are left"):
        LIME(n_samples=300, segmentation=SEGMENTS, baseline=0.0, max_queries=200).explain(model, np.ones((1, 16, 16)))


class _Fixed:
    """An estimator whose error follows a given schedule (queries -> error)."""

    def __init__(self):
        self.n = 0

    def update(self, chunk, masks, scores):
        self.n += chunk.size

    def finalize(self):
        return np.zeros((1, 4))

    def standard_error(self):
        return np.array([[0.0, 1.0, 2.0, 3.0]]), np.full((1, 4), 10.0 / self.n)


class _Chunk:
    def __init__(self, n):
        self.size = n

    def materialize(self, backend, dtype):
        return np.ones((self.size, 2, 2))


class _Sampler:
    n_total = 1000

    def chunks(self, size):
        for start in range(0, self.n_total, size):
            yield _Chunk(min(size, self.n_total - start))


class _Renderer:
    def render(self, masks):
        return masks[:, None]


def test_checkpoints_grow_geometrically():
    adapter = SpyAdapter(lambda b: np.zeros((len(b), 1)), batch_size=10)
    plan = engine.Plan(_Sampler(), _Renderer(), _Fixed())
    result = engine.run(plan, adapter, np.array([0]), stopping=Stopping(0.02, min_queries=100, growth=1.5))
    assert isinstance(result, RunResult)
    checks = [q for q, _ in result.history]
    assert checks == [100, 150, 230, 340, 510]      # scheduled at 100 x 1.5^k, checked at the batch end reaching it
    errors = [e for _, e in result.history]
    np.testing.assert_allclose(errors, [10 / q * 2 / math.sqrt(5) for q in checks])
    assert result.converged and result.n_queries == 510


def test_stopping_needs_an_error_estimate():
    plan = engine.Plan(_Sampler(), _Renderer(), type("E", (), {"update": _Fixed.update, "finalize": _Fixed.finalize})())
    with pytest.raises(TypeError, match="has no standard_error\\(\\); x cannot stop early"):
        engine.run(plan, SpyAdapter(lambda b: np.zeros((len(b), 1))), np.array([0]), desc="x",
                   stopping=Stopping(0.1))


def test_bad_tolerance():
    with pytest.raises(ValueError, match="'tolerance' parameter of LIME"):
        LIME(tolerance=0.0)
    with pytest.raises(ValueError, match="'min_queries' parameter of LIME"):
        LIME(tolerance=0.1, min_queries=0)
