"""KernelSHAP samplers and early stopping: prefix-valid designs, post-stratification, stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perturbx.adapters import Callable
from perturbx.estimators.kernel_shap import ShapleyRegression
from perturbx.explainers.kernel_shap import KernelSHAP
from perturbx.samplers.coalitions import SAMPLING, SegmentMap, ShapleyKernelSampler, shapley_kernel
from perturbx.segmentation import Grid

from .test_kernel_shap import brute_force_shapley, game_adapter, random_segments, smooth_game


def additive_game(m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``v(z) = c + a . z`` on every coalition (2**M, 1), and ``a`` (its Shapley values)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=m)
    z = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1
    return (0.3 + z @ a)[:, None], a


def lookup(values: np.ndarray, z: np.ndarray) -> np.ndarray:
    return values[(z.astype(np.int64) << np.arange(z.shape[1])).sum(axis=1)]


def stream(m: int, n: int, sampling: str, seed: int = 0, chunk: int = 7):
    sampler = ShapleyKernelSampler(SegmentMap(np.arange(m)[None]), n, np.random.default_rng(seed), sampling=sampling)
    return sampler, list(sampler.chunks(chunk))


@pytest.mark.parametrize("sampling", SAMPLING)
def test_every_prefix_gives_the_exact_values_of_an_additive_game(sampling):
    """The regression is exact on additive games whenever it is determined: any prefix is a valid design."""
    m = 9
    values, a = additive_game(m)
    sampler, chunks = stream(m, 200, sampling)
    est = ShapleyRegression(np.arange(m)[None], values[-1], 16, strata=sampler.strata)
    checked = 0
    for chunk in chunks:
        est.update(chunk, None, lookup(values, chunk.z))
        phi, _ = est.standard_error()
        if np.isnan(phi).all():  # too few coalitions yet to determine the values
            continue
        np.testing.assert_allclose(phi[0], a, atol=1e-9)
        checked += 1
    assert checked >= len(chunks) - 3  # determined after a few chunks of 7 rows


@pytest.mark.parametrize("sampling", SAMPLING)
def test_post_stratified_weights_sum_to_the_kernel_mass_of_every_size(sampling):
    m = 12
    sampler, (chunk,) = stream(m, 500, sampling, chunk=500)
    kernel = shapley_kernel(m)
    for cut in (21, 121, sampler.n_total):  # the empty row and whole antithetic pairs
        est = ShapleyRegression(np.arange(m)[None], np.zeros(1), 16, strata=sampler.strata)
        est.update(type(chunk)(chunk.z[:cut], chunk.weights[:cut], chunk.groups[:cut], chunk.segmap,
                               chunk.strata[:cut]), None, np.zeros((cut, 1)))
        d = est._design()
        w, sizes = d.weights(), d.z.sum(axis=1)
        seen = np.unique(d.k[d.k > 0])
        mass = np.bincount(d.k, weights=w, minlength=len(sampler.strata.mass))
        np.testing.assert_allclose(mass[seen], sampler.strata.mass[seen], rtol=1e-12)
        if sampling.endswith("stratified") and len(seen) == len(sampler.strata.mass) - 1:
            for s in range(1, m):  # every size carries its kernel mass once every stratum is seen
                assert w[sizes == s].sum() == pytest.approx(kernel[s] * math.comb(m, s), rel=1e-12)


@pytest.mark.parametrize("sampling", SAMPLING)
def test_designs_are_antithetic_and_stratified_ones_distinct(sampling):
    sampler, chunks = stream(14, 700, sampling)
    z = np.concatenate([c.z for c in chunks])
    assert sampler.n_total == len(z) <= 699 and not z[0].any()
    np.testing.assert_array_equal(z[1::2][:len(z[2::2])] + z[2::2], 1)  # pairs (z, 1 - z) after the empty row
    assert not (z.sum(axis=1) == 14).any()
    if sampling.endswith("stratified"):
        assert len(np.unique(z, axis=0)) == len(z)


def test_stratified_stream_is_nested_each_prefix_close_to_the_design_of_its_size():
    """Every stratum is seen in the first pairs; a prefix holds about the allocation of its own budget."""
    from perturbx.samplers.coalitions import SizeGroup

    m, n = 30, 2048
    sampler, (chunk,) = stream(m, n, "stratified", chunk=n)
    k = chunk.strata[1::2]  # stratum of each pair
    n_strata = len(sampler.strata.mass) - 1
    assert set(k[:2 * n_strata]) == set(range(1, n_strata + 1))  # two pairs of each stratum first
    groups = [SizeGroup(s, m) for s in range(1, m // 2 + 1)]
    for pairs in (150, 400, 700):
        seen = np.bincount(k[:pairs], minlength=n_strata + 1)[1:]
        planned = sampler._allocation(groups, 2 * pairs)[:n_strata]
        assert np.abs(seen - planned).max() <= max(3, 0.1 * planned.max()), (seen, planned)


@pytest.mark.parametrize("sampling", SAMPLING)
def test_exact_values_when_every_coalition_is_enumerated(sampling):
    m = 7
    values = np.random.default_rng(1).normal(size=(2 ** m, 2))
    seg = random_segments(m)
    e = KernelSHAP(n_samples=2 ** m, segmentation=seg, baseline=0.0, sampling=sampling, random_state=0).explain(
        game_adapter(values, seg), np.ones(seg.shape, np.float32), target=[0, 1])
    assert e.exact
    np.testing.assert_allclose(e.segment_weights, brute_force_shapley(values), atol=1e-9)
    np.testing.assert_array_equal(e.errors, 0.0)


@pytest.mark.parametrize("sampling", SAMPLING)
def test_each_sampler_agrees_with_brute_force_within_its_jackknife_error(sampling):
    m = 10
    values = smooth_game(m, seed=2) * 3 - 1  # not probabilities: the linear fit alone
    exact = brute_force_shapley(values)[0]
    seg = random_segments(m)
    ratios = []
    for seed in range(6):
        e = KernelSHAP(n_samples=300, segmentation=seg, baseline=0.0, sampling=sampling, interactions=False,
                       random_state=seed).explain(game_adapter(values, seg, batch_size=300),
                                                  np.ones(seg.shape, np.float32), target=0)
        err, se = e.segment_weights[0] - exact, e.errors[0]
        assert np.linalg.norm(err) <= 4 * np.linalg.norm(se)
        ratios.append(err / se)
        np.testing.assert_allclose(e.segment_weights.sum(), e.scores - e.base_value, atol=1e-12)
    assert 0.4 < np.sqrt(np.mean(np.square(ratios))) < 2.0  # the standard error is about right


# ---- early stopping ---------------------------------------------------------------------------------------


def test_additive_game_stops_at_the_first_check_with_the_exact_values():
    m = 12
    values, a = additive_game(m, seed=3)
    seg = random_segments(m, shape=(8, 8))
    e = KernelSHAP(n_samples=2000, segmentation=seg, baseline=0.0, tolerance=1e-6, min_queries=60,
                   random_state=0).explain(game_adapter(values, seg, batch_size=16), np.ones(seg.shape, np.float32))
    assert e.converged and e.n_queries < 200
    assert len(e.convergence_history) == 1 or e.convergence_history[-2, 1] > 1e-6
    np.testing.assert_allclose(e.segment_weights[0], a, atol=1e-9)


def test_constant_model_stops_at_the_first_check_with_zero_error():
    x = np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)
    e = KernelSHAP(n_samples=2000, segmentation=Grid((3, 3)), tolerance=0.01, random_state=0).explain(
        Callable(lambda b: np.full((len(b), 2), 0.7), batch_size=50), x, target=[0, 1])
    assert e.converged and e.estimated_error == 0.0
    assert len(e.convergence_history) == 1 and e.n_queries == 1 + 100  # the input, then two batches of 50
    np.testing.assert_array_equal(e.segment_weights, 0.0)


def test_error_is_infinite_until_every_stratum_is_seen_twice():
    m = 20
    values = np.random.default_rng(0).normal(size=(1, 1))
    sampler, chunks = stream(m, 1000, "stratified", chunk=1000)
    n_strata = len(sampler.strata.mass) - 1
    chunk = chunks[0]
    est = ShapleyRegression(np.arange(m)[None], values[0], 16, strata=sampler.strata)
    cut = 1 + 2 * n_strata + 2  # the empty row, one pair of every stratum, one more pair
    est.update(type(chunk)(chunk.z[:cut], chunk.weights[:cut], chunk.groups[:cut], chunk.segmap,
                           chunk.strata[:cut]), None, np.random.default_rng(1).normal(size=(cut, 1)))
    assert np.isnan(est.standard_error()[1]).all()
    rest = slice(cut, 1 + 8 * n_strata)
    est.update(type(chunk)(chunk.z[rest], chunk.weights[rest], chunk.groups[rest], chunk.segmap, chunk.strata[rest]),
               None, np.random.default_rng(2).normal(size=(rest.stop - cut, 1)))
    assert np.isfinite(est.standard_error()[1]).all()


@pytest.mark.parametrize("sampling", ["stratified", "kernel"])
def test_stopping_is_reproducible_and_max_queries_is_never_exceeded(sampling):
    m = 12
    values = smooth_game(m, seed=4)
    seg = random_segments(m, shape=(8, 8))
    x = np.ones(seg.shape, np.float32)

    def run(**kw):
        return KernelSHAP(n_samples=3000, segmentation=seg, baseline=0.0, sampling=sampling, random_state=5,
                          **kw).explain(game_adapter(values, seg, batch_size=40), x)

    a, b = run(tolerance=0.005), run(tolerance=0.005)
    assert a.converged and a.n_queries < 3000
    assert a.n_queries == b.n_queries
    np.testing.assert_array_equal(a.segment_weights, b.segment_weights)
    np.testing.assert_array_equal(a.convergence_history, b.convergence_history)
    assert a.estimated_error <= 0.005 < a.convergence_history[-2, 1]
    capped = run(tolerance=1e-9, max_queries=500)
    assert not capped.converged and capped.n_queries <= 500
    assert a.n_queries < run(tolerance=0.002).n_queries  # a tighter tolerance takes more queries


def test_sampling_and_stopping_parameters_are_validated():
    with pytest.raises(ValueError, match=r"'sampling' parameter of KernelSHAP must be one of .*'stratified'.*"
                                         r"Got 'sobol'"):
        KernelSHAP(sampling="sobol")
    with pytest.raises(ValueError, match="'tolerance' parameter of KernelSHAP"):
        KernelSHAP(tolerance=0.0)
    with pytest.raises(ValueError, match="'min_queries' parameter of KernelSHAP"):
        KernelSHAP(min_queries=0)
    with pytest.raises(ValueError, match="sampling must be one of"):
        ShapleyKernelSampler(SegmentMap(np.arange(5)[None]), 20, np.random.default_rng(0), sampling="x")
