"""LIME: the streamed ridge is scikit-learn's, lime_image agreement, linear and constant models, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import pairwise_distances

import perturbx
from perturbx._utils import Layout
from perturbx.adapters import Callable
from perturbx.estimators.linear_surrogate import WeightedRidge, cosine_kernel
from perturbx.explainers.lime import LIME
from perturbx.samplers.coalitions import CoalitionChunk, SegmentMap, UniformCoalitionSampler
from perturbx.segmentation import SLIC, Grid, compute_segments, segment_mean

from .conftest import SpyAdapter, linear_model


def test_kernel_is_lime_kernel_on_sklearn_cosine_distance():
    z = (np.random.default_rng(0).random((200, 9)) < 0.5).astype(float)
    z[0], z[1] = 1, 0  # the unperturbed input and the empty coalition
    d = pairwise_distances(z, np.ones((1, 9)), metric="cosine").ravel()
    np.testing.assert_allclose(cosine_kernel(z, 0.25), np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)), atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.0, 7.5])
def test_streamed_ridge_equals_sklearn(alpha):
    """Coefficients, intercept and weighted R^2 of lime's Ridge fit, on lime's sample (first row all on)."""
    rng = np.random.default_rng(1)
    m, t, n = 11, 3, 400
    z = (rng.random((n, m)) < 0.5).astype(np.uint8)
    z[0] = 1
    y = rng.normal(size=(n, t)) + z @ rng.normal(size=(m, t)) + 3.0
    seg = np.arange(m)[None]
    est = WeightedRidge(seg, y[0], kernel_width=0.25, alpha=alpha)
    for start in range(1, n, 37):
        est.update(CoalitionChunk(z[start:start + 37], None, None, SegmentMap(seg)), None, y[start:start + 37])
    maps = est.finalize()
    w = cosine_kernel(z.astype(float), 0.25)
    for k in range(t):
        ref = Ridge(alpha=alpha).fit(z, y[:, k], sample_weight=w)
        np.testing.assert_allclose(est.coef[k], ref.coef_, atol=1e-10)
        np.testing.assert_allclose(est.intercept[k], ref.intercept_, atol=1e-10)
        np.testing.assert_allclose(est.score[k], ref.score(z, y[:, k], sample_weight=w), atol=1e-10)
    np.testing.assert_array_equal(maps, est.coef[:, seg])


def test_agrees_with_lime_image_explainer(small_cnn):
    """Same segments, hide colour (segment mean), kernel and ridge; 2,000 samples; top class."""
    torch = pytest.importorskip("torch")
    lime_image = pytest.importorskip("lime.lime_image")
    from perturbx.adapters import Torch

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :23] / 20
    x = np.clip(np.stack([yy, xx, 0.5 + 0.3 * np.sin(6 * yy)]) + 0.1 * rng.random((3, 20, 23)), 0, 1)
    x = x.astype(np.float32)
    seg = compute_segments(SLIC(n_segments=16), x, Layout("CHW"), "test")
    e = LIME(n_samples=2000, segmentation=seg, random_state=0).explain(Torch(small_cnn, output="probs"), x)

    def classifier_fn(images):  # lime hands over (N, H, W, 3) float64 images
        with torch.no_grad():
            batch = torch.as_tensor(np.asarray(images, np.float32).transpose(0, 3, 1, 2))
            return torch.softmax(small_cnn(batch), dim=1).numpy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lime_image.LimeImageExplainer(random_state=1).explain_instance(
            x.transpose(1, 2, 0).astype(np.float64), classifier_fn, top_labels=1, hide_color=None,
            num_samples=2000, batch_size=200, segmentation_fn=lambda image: seg)
    assert ref.top_labels[0] == e.targets[0]
    theirs = np.zeros(seg.max() + 1)
    for feature, weight in ref.local_exp[ref.top_labels[0]]:
        theirs[feature] = weight
    assert np.corrcoef(theirs, e.segment_weights[0])[0, 1] >= 0.95
    assert e.surrogate_score[0] == pytest.approx(ref.score, abs=0.05)
    assert e.n_queries == 2000


def test_linear_model_gets_coefficients_times_x_minus_baseline(rng):
    """Without the ridge penalty the surrogate of a model linear in the pixels is exact (R^2 = 1)."""
    w = rng.normal(size=(2, 3, 16, 16))
    x = rng.random((3, 16, 16)).astype(np.float32)
    seg = Grid((4, 4))(np.zeros((16, 16)))
    e = LIME(n_samples=300, segmentation=seg, alpha=0.0, random_state=0).explain(
        Callable(linear_model(w)), x, target=[0, 1])
    b = segment_mean(x, seg).astype(np.float32)
    delta = (w * (x.astype(np.float64) - b)[None]).sum(axis=1)
    expected = np.stack([np.bincount(seg.ravel(), weights=d.ravel()) for d in delta])
    np.testing.assert_allclose(e.segment_weights, expected, atol=2e-4)
    np.testing.assert_allclose(e.intercept, linear_model(w)(b[None])[0], atol=2e-4)
    np.testing.assert_allclose(e.surrogate_score, 1.0, atol=1e-8)
    np.testing.assert_allclose(e.attributions, e.segment_weights[:, seg])


def test_ridge_penalty_shrinks_towards_zero(rng):
    w = rng.normal(size=(1, 3, 16, 16))
    x = rng.random((3, 16, 16)).astype(np.float32)
    norms = [np.abs(LIME(n_samples=300, segmentation=Grid((4, 4)), alpha=alpha, random_state=0).explain(
        Callable(linear_model(w)), x, target=0).segment_weights).sum() for alpha in (0.0, 1.0, 100.0)]
    assert norms[0] > norms[1] > norms[2] > 0


def test_constant_model_has_zero_weights_and_a_perfect_score():
    x = np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)
    e = LIME(n_samples=50, segmentation=Grid((3, 3)), random_state=0).explain(
        Callable(lambda b: np.full((len(b), 3), 0.25)), x)
    np.testing.assert_array_equal(e.segment_weights, 0.0)
    np.testing.assert_allclose(e.intercept, 0.25)
    np.testing.assert_array_equal(e.surrogate_score, 1.0)


def test_queries_seeds_and_batch_sizes(rng):
    w = rng.normal(size=(2, 3, 16, 16))
    x = rng.random((3, 16, 16)).astype(np.float32)
    spy = SpyAdapter(linear_model(w), batch_size=64)
    a = LIME(n_samples=150, segmentation=Grid((4, 4)), random_state=7).explain(spy, x)
    assert a.n_queries == 150 and spy.batch_sizes == [1, 64, 64, 21]
    b = LIME(n_samples=150, segmentation=Grid((4, 4)), random_state=7).explain(Callable(linear_model(w),
                                                                                        batch_size=10), x)
    c = LIME(n_samples=150, segmentation=Grid((4, 4)), random_state=8).explain(spy, x)
    np.testing.assert_allclose(a.segment_weights, b.segment_weights, rtol=1e-10)
    assert not np.allclose(a.segment_weights, c.segment_weights)


def test_coalitions_are_fair_coins_painted_on_segments():
    seg = Grid((3, 4))(np.zeros((9, 8)))
    chunks = list(UniformCoalitionSampler(SegmentMap(seg), 3000, np.random.default_rng(0)).chunks(512))
    z = np.concatenate([c.z for c in chunks])
    assert z.shape == (3000, 12) and abs(z.mean() - 0.5) < 0.01
    from perturbx.backend import NUMPY
    np.testing.assert_array_equal(chunks[0].materialize(NUMPY, np.float32), chunks[0].z[:, seg])


def test_channels_last_with_mean_and_constant_baselines(rng):
    w = rng.normal(size=(2, 16, 16, 3))
    x = rng.random((16, 16, 3)).astype(np.float32)
    seg = Grid((4, 4))(x)
    for baseline in ("mean", 0.0):
        e = LIME(n_samples=200, segmentation=seg, baseline=baseline, alpha=0.0, random_state=0).explain(
            Callable(linear_model(w), input_layout="HWC"), x, target=1)
        b = np.moveaxis(segment_mean(np.moveaxis(x, -1, 0), seg), 0, -1) if baseline == "mean" else 0.0
        expected = np.bincount(seg.ravel(), weights=(w[1] * (x - np.float32(b))).sum(axis=-1).ravel())
        np.testing.assert_allclose(e.segment_weights[0], expected, atol=2e-4)
        assert e.attributions.shape == (16, 16)


def test_errors(rng):
    x = rng.random((3, 12, 12)).astype(np.float32)
    f = Callable(linear_model(rng.normal(size=(2, 3, 12, 12))))
    with pytest.raises(ValueError, match=r"'n_samples' parameter of LIME is 20.*36 superpixels.*>= 37"):
        LIME(n_samples=20, segmentation=Grid((6, 6))).explain(f, x)
    with pytest.raises(ValueError, match=r"shape \(11, 12\).*\(12, 12\)"):
        LIME(segmentation=np.zeros((11, 12), dtype=int)).explain(f, x)
    with pytest.raises(ValueError, match="single segment"):
        LIME(segmentation=np.zeros((12, 12), dtype=int)).explain(f, x)
    with pytest.raises(ValueError, match="'kernel_width' parameter of LIME"):
        LIME(kernel_width=0)
    with pytest.raises(ValueError, match="'alpha' parameter of LIME"):
        LIME(alpha=-1.0)
    with pytest.raises(ValueError, match="'n_samples' parameter of LIME must be an int >= 3"):
        LIME(n_samples=1)
    with pytest.raises(TypeError, match="'segmentation' parameter of LIME"):
        LIME(segmentation=5)
    with pytest.raises(perturbx.QueryBudgetError):
        LIME(n_samples=100, segmentation=Grid((3, 3)), max_queries=99).explain(f, x)


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_antithetic_coalitions_are_complement_pairs_whatever_the_chunking(chunk):
    seg = np.arange(9)[None]
    sampler = UniformCoalitionSampler(SegmentMap(seg), 31, np.random.default_rng(3), "antithetic")
    stream = [c.z for c in sampler.chunks(chunk)]
    z = np.concatenate(stream)
    ref = np.concatenate([c.z for c in UniformCoalitionSampler(SegmentMap(seg), 31, np.random.default_rng(3),
                                                               "antithetic").chunks(31)])
    np.testing.assert_array_equal(z, ref)
    np.testing.assert_array_equal(z[0:30:2] + z[1:30:2], 1)
    assert len(z) == 31 and max(len(s) for s in stream) <= chunk


def test_antithetic_pairs_stay_in_one_jackknife_group():
    seg = np.arange(4)[None]
    est = WeightedRidge(seg, np.zeros(1), kernel_width=0.25, alpha=1.0, n_groups=3, block=2)
    z = (np.random.default_rng(0).random((12, 4)) < 0.5).astype(np.uint8)
    est.update(CoalitionChunk(z[:5], None, None, SegmentMap(seg)), None, np.zeros((5, 1)))
    est.update(CoalitionChunk(z[5:], None, None, SegmentMap(seg)), None, np.zeros((7, 1)))
    w = cosine_kernel(z.astype(float), 0.25)
    expected = [w[[0, 1, 6, 7]].sum(), w[[2, 3, 8, 9]].sum(), w[[4, 5, 10, 11]].sum()]
    np.testing.assert_allclose(est._sums["w"][:3], expected)


def test_bad_sampling():
    with pytest.raises(ValueError, match="'sampling' parameter of LIME must be one of"):
        LIME(sampling="sobol")


# ---- logistic control variate ------------------------------------------------------------------------------------


def test_population_ridge_equals_the_fit_over_every_coalition():
    """The model-free ridge on a known game matches lime's expected fit: every coalition, each with mass 2**-M."""
    from perturbx.estimators.linear_surrogate import population_ridge
    from perturbx.estimators.logistic_game import LogisticGame

    rng = np.random.default_rng(4)
    m, n = 7, 300
    pair = np.triu(rng.normal(0, 0.5, (m, m)), 1)
    game = LogisticGame(-0.3, rng.normal(size=m), pair + pair.T)
    z = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1).astype(float)
    scale = 2 ** m / (n - 1)  # every coalition once, so the unperturbed row and penalty scale by 2**M / (n - 1)
    w = np.append(cosine_kernel(z, 0.25), scale)
    zz = np.vstack([z, np.ones(m)])
    from sklearn.linear_model import Ridge

    exact = Ridge(alpha=scale).fit(zz, game(zz), sample_weight=w)
    coef, intercept, error = population_ridge(game, m, 0.25, 1.0, n)
    np.testing.assert_allclose(coef, exact.coef_, atol=3e-3)
    assert intercept == pytest.approx(exact.intercept_, abs=3e-3)
    assert (np.abs(coef - exact.coef_) < 4 * error).all()


def test_population_ridge_error_is_calibrated_and_stops_at_the_tolerance():
    """The Monte Carlo error it reports matches the spread over population seeds; a loose tolerance stops
    after the first block, where the error is twice that of four blocks."""
    from perturbx.estimators.linear_surrogate import POPULATION_BLOCK, population_ridge
    from perturbx.estimators.logistic_game import LogisticGame

    rng = np.random.default_rng(6)
    m, n = 12, 500
    pair = np.triu(rng.normal(0, 0.5, (m, m)), 1)
    game = LogisticGame(-0.3, rng.normal(size=m), pair + pair.T)
    runs = [population_ridge(game, m, 0.25, 1.0, n, n_big=POPULATION_BLOCK, seed=s) for s in range(24)]
    spread = np.std([r[0] for r in runs], axis=0, ddof=1)
    reported = np.mean([r[2] for r in runs], axis=0)
    assert 0.7 < np.linalg.norm(spread) / np.linalg.norm(reported) < 1.4
    one = population_ridge(game, m, 0.25, 1.0, n, n_big=4 * POPULATION_BLOCK, tolerance=np.inf)
    four = population_ridge(game, m, 0.25, 1.0, n, n_big=4 * POPULATION_BLOCK, tolerance=0.0)
    np.testing.assert_allclose(one[0], population_ridge(game, m, 0.25, 1.0, n, n_big=POPULATION_BLOCK)[0])
    assert 1.7 < np.linalg.norm(one[2]) / np.linalg.norm(four[2]) < 2.3


def probability_game(m: int, seed: int) -> np.ndarray:
    """A sigmoid of a random quadratic form of the coalition, (2**M, 1) (an image-classifier-like game)."""
    rng = np.random.default_rng(seed)
    z = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1
    a, q = rng.normal(size=m) * 2, rng.normal(size=(m, m)) * 0.8
    return (1 / (1 + np.exp(-(z @ a + np.einsum("ni,ij,nj->n", z, q, z) / m - 1))))[:, None]


def test_control_variate_cuts_the_error_on_probabilities():
    from .test_kernel_shap import game_adapter, random_segments

    m = 10
    seg = random_segments(m)
    x = np.ones(seg.shape, np.float32)
    values = probability_game(m, seed=1)
    long = LIME(n_samples=60_000, segmentation=seg, baseline=0.0, control_variate=False, random_state=99).explain(
        game_adapter(values, seg, batch_size=4096), x, target=0)
    truth = long.segment_weights[0]
    err, err_intercept = {True: [], False: []}, {True: [], False: []}
    for cv in (True, False):
        for seed in range(6):
            e = LIME(n_samples=300, segmentation=seg, baseline=0.0, control_variate=cv, random_state=seed).explain(
                game_adapter(values, seg, batch_size=128), x, target=0)
            err[cv].append(np.linalg.norm(e.segment_weights[0] - truth))
            err_intercept[cv].append(abs(e.intercept[0] - long.intercept[0]))
            assert e.estimate[0] == ("logistic" if cv else "ridge") and e.n_queries == 300
    assert np.mean(err[True]) < np.mean(err[False]) / 2
    assert np.mean(err_intercept[True]) < 0.75 * np.mean(err_intercept[False])


def test_control_variate_is_not_used_for_scores_outside_0_1():
    from .test_kernel_shap import game_adapter, random_segments

    m = 8
    seg = random_segments(m)
    values = probability_game(m, seed=2) * 3 - 1
    e = LIME(n_samples=200, segmentation=seg, baseline=0.0, random_state=0).explain(
        game_adapter(values, seg), np.ones(seg.shape, np.float32))
    assert e.estimate[0] == "ridge"
    with pytest.raises(TypeError, match="'control_variate' parameter of LIME must be True or False"):
        LIME(control_variate=1)


# ---- orthogonal design -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [3, 9, 31, 40])
def test_orthogonal_blocks_are_balanced_to_second_order_and_folded_over(m):
    from perturbx.samplers.coalitions import orthogonal_block

    block = orthogonal_block(np.random.default_rng(m), m).astype(int)
    h = len(block) // 2
    assert h > m and h & (h - 1) == 0 and len(np.unique(block, axis=0)) == 2 * h
    np.testing.assert_array_equal(block[0::2] + block[1::2], 1)  # foldover: complement pairs
    half = block[0::2]
    np.testing.assert_array_equal(half.sum(axis=0), h // 2)  # each superpixel on half the time
    both = half.T @ half
    np.testing.assert_array_equal(both[~np.eye(m, dtype=bool)], h // 4)  # each pair on together a quarter


def test_orthogonal_rows_are_uniform_coalitions():
    """Each row of a randomised block is a uniform draw: the 2**3 patterns of 3 bits of row 5, over 4,000 blocks."""
    from perturbx.samplers.coalitions import orthogonal_block

    rng = np.random.default_rng(0)
    codes = [int(orthogonal_block(rng, 12)[5, [0, 4, 11]] @ [1, 2, 4]) for _ in range(4000)]
    counts = np.bincount(codes, minlength=8)
    chi2 = ((counts - 500) ** 2 / 500).sum()
    assert chi2 < 24.3  # 7 degrees of freedom, p = 0.001


@pytest.mark.parametrize("chunk", [1, 5, 64, 300])
def test_orthogonal_stream_does_not_depend_on_chunking(chunk):
    seg = np.arange(20)[None]
    ref = np.concatenate([c.z for c in UniformCoalitionSampler(SegmentMap(seg), 150, np.random.default_rng(1),
                                                               "orthogonal").chunks(150)])
    stream = [c.z for c in UniformCoalitionSampler(SegmentMap(seg), 150, np.random.default_rng(1),
                                                   "orthogonal").chunks(chunk)]
    np.testing.assert_array_equal(np.concatenate(stream), ref)
    assert len(ref) == 150 and max(len(s) for s in stream) <= chunk


def test_designs_estimate_the_same_surrogate_and_orthogonal_has_less_noise():
    """A game with pairwise interactions: the orthogonal blocks keep them out of the linear fit."""
    from .test_kernel_shap import game_adapter, random_segments

    m = 10
    seg = random_segments(m)
    x = np.ones(seg.shape, np.float32)
    rng = np.random.default_rng(0)
    z = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1).astype(float)
    values = (z @ rng.normal(size=m) + 0.3 * np.einsum("ni,ij,nj->n", z, np.triu(rng.normal(size=(m, m)), 1), z))
    values = values[:, None]
    kw = {"segmentation": seg, "baseline": 0.0, "control_variate": False}
    truth = LIME(n_samples=60_000, sampling="iid", random_state=99, **kw).explain(
        game_adapter(values, seg, batch_size=4096), x, target=0).segment_weights[0]
    err = {}
    for sampling in ("iid", "orthogonal"):
        runs = np.stack([LIME(n_samples=200, sampling=sampling, random_state=s, **kw).explain(
            game_adapter(values, seg, batch_size=128), x, target=0).segment_weights[0] for s in range(30)])
        err[sampling] = np.sqrt(((runs - truth) ** 2).sum(axis=1).mean())
        bias = np.linalg.norm(runs.mean(axis=0) - truth)
        assert bias < 3 * err[sampling] / np.sqrt(30) + 0.01 * np.linalg.norm(truth)  # no error beyond noise
    assert err["orthogonal"] < 0.8 * err["iid"]
