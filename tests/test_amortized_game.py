"""The game behind Amortized (numpy only): kernel sampling, efficiency, the unbiased residual check."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from perturbx.amortized.game import (
    grid_segments,
    kernel_moments,
    normalise,
    residual_values,
    sample_coalitions,
    size_probs,
)


def brute_force_shapley(game: dict[tuple, np.ndarray], m: int) -> np.ndarray:
    """Shapley values (T, M) of a game given on every coalition, from the definition."""
    t = len(next(iter(game.values())))
    phi = np.zeros((t, m))
    for z in game:
        for i in range(m):
            if z[i] == 0:
                s = sum(z)
                w = math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m)
                with_i = tuple(1 if j == i else z[j] for j in range(m))
                phi[:, i] += w * (game[with_i] - game[z])
    return phi


@pytest.fixture
def game():
    rng = np.random.default_rng(3)
    m = 5
    coalitions = list(itertools.product([0, 1], repeat=m))
    return m, {z: rng.normal(size=2) for z in coalitions}


def test_grid_segments_are_the_grid_of_patches():
    seg = grid_segments((8, 12), (2, 3))
    assert seg.shape == (8, 12) and seg.max() == 5
    np.testing.assert_array_equal(seg[:4, :4], 0)
    np.testing.assert_array_equal(seg[4:, 8:], 5)


def test_coalitions_come_in_complementary_pairs_with_the_kernel_sizes():
    m = 6
    z = sample_coalitions(np.random.default_rng(0), 40_000, m)
    assert z.shape == (80_000, m) and z.dtype == np.uint8
    np.testing.assert_array_equal(z[0::2] + z[1::2], 1)
    sizes = np.bincount(z[0::2].sum(1), minlength=m + 1) / 40_000
    np.testing.assert_allclose(sizes, size_probs(m), atol=0.01)
    assert sizes[0] == sizes[m] == 0
    # within a size every subset is equally likely: each player is in a size-2 coalition a third of the time
    pairs = z[0::2][z[0::2].sum(1) == 2]
    np.testing.assert_allclose(pairs.mean(0), 2 / m, atol=0.02)


def test_kernel_moments_match_enumeration():
    m = 5
    p = size_probs(m)
    e1 = e2 = 0.0
    for z in itertools.product([0, 1], repeat=m):
        s = sum(z)
        if 0 < s < m:
            w = p[s] / math.comb(m, s)
            e1, e2 = e1 + w * z[0], e2 + w * z[0] * z[1]
    np.testing.assert_allclose(kernel_moments(m), (e1, e2), rtol=1e-12)


def test_normalise_makes_the_values_sum_to_delta_exactly():
    raw = np.random.default_rng(0).normal(size=(3, 2, 10))
    delta = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 7.0]])
    out = normalise(raw, delta)
    np.testing.assert_allclose(out.sum(-1), delta, atol=1e-12)
    np.testing.assert_allclose(np.diff(out - raw, axis=-1), 0, atol=1e-12)  # the same shift for every player


def test_residual_estimate_is_unbiased_by_enumeration(game):
    """E over the kernel's pairs of the one-pair estimate equals shapley(v) - phi exactly."""
    m, v = game
    phi_true = brute_force_shapley(v, m)
    ones, zeros = tuple([1] * m), tuple([0] * m)
    phi = normalise(np.random.default_rng(1).normal(size=(2, m)), v[ones] - v[zeros])
    p = size_probs(m)
    expected = np.zeros_like(phi)
    for z in v:
        s = sum(z)
        if 0 < s < m:
            pair = np.array([z, tuple(1 - np.array(z))], dtype=np.uint8)
            residual = np.stack([v[tuple(r)] - v[zeros] - phi @ r for r in pair])
            delta, _ = residual_values(pair, residual)
            expected += p[s] / math.comb(m, s) * delta
    np.testing.assert_allclose(expected, phi_true - phi, atol=1e-12)


def test_residual_squared_error_converges_to_the_true_distance(game):
    m, v = game
    phi_true = brute_force_shapley(v, m)
    zeros = tuple([0] * m)
    phi = normalise(np.zeros((2, m)), phi_true.sum(1))
    z = sample_coalitions(np.random.default_rng(2), 50_000, m)
    residual = np.stack([v[tuple(r)] - v[zeros] - phi @ r for r in z])
    delta, squared = residual_values(z, residual)
    np.testing.assert_allclose(delta, phi_true - phi, atol=0.03)
    np.testing.assert_allclose(squared.sum(1), ((phi_true - phi) ** 2).sum(1), rtol=0.05)


def test_residual_of_the_shapley_values_of_an_additive_game_is_zero():
    m = 7
    w = np.random.default_rng(4).normal(size=(1, m))
    z = sample_coalitions(np.random.default_rng(5), 20, m)
    delta, squared = residual_values(z, z @ w.T - z @ w.T)
    np.testing.assert_array_equal(delta, 0)
    np.testing.assert_array_equal(squared, 0)


def test_one_pair_gives_no_squared_error():
    z = sample_coalitions(np.random.default_rng(0), 1, 4)
    _, squared = residual_values(z, np.ones((2, 1)))
    assert np.isnan(squared).all()
