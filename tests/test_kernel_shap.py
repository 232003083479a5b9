"""KernelSHAP: exact Shapley values by enumeration, exact efficiency, linear games, the design, shap, errors."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable
from perturbx.backend import NUMPY
from perturbx.explainers.kernel_shap import KernelSHAP
from perturbx.samplers.coalitions import SegmentMap, ShapleyKernelSampler, shapley_kernel
from perturbx.segmentation import Grid, segment_mean

from .conftest import SpyAdapter, linear_model


def brute_force_shapley(values: np.ndarray) -> np.ndarray:
    """Shapley values (T, M) of a game given on every coalition: ``values[code]`` (2**M, T), bit j = player j."""
    n_codes, t = values.shape
    m = n_codes.bit_length() - 1
    codes = np.arange(n_codes)
    sizes = np.array([bin(c).count("1") for c in codes])
    phi = np.zeros((t, m))
    for j in range(m):
        out = codes[(codes >> j) & 1 == 0]
        w = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in sizes[out]])
        phi[:, j] = w @ (values[out | (1 << j)] - values[out])
    return phi


def game_adapter(values: np.ndarray, segments: np.ndarray, batch_size: int = 64) -> Callable:
    """Adapter over "HW" images of 0/1 pixels: the score is ``values[coalition]`` (float64 table lookup).

    It also checks that every superpixel arrives whole (all its pixels kept or all hidden).
    """
    m = int(segments.max()) + 1
    flat = segments.ravel()

    def fn(batch):
        pix = batch.reshape(len(batch), -1)
        z = pix[:, [np.flatnonzero(flat == j)[0] for j in range(m)]]
        assert np.array_equal(pix, z[:, flat]), "a superpixel was not kept or hidden as a whole"
        return values[((z > 0.5).astype(np.int64) << np.arange(m)).sum(axis=1)]

    return Callable(fn, input_layout="HW", batch_size=batch_size)


def random_segments(m: int, shape=(6, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(shape[0] * shape[1]) % m).reshape(shape)


@pytest.mark.parametrize("m", [2, 3, 5, 8, 12])
def test_exact_mode_equals_brute_force_on_random_set_functions(m):
    rng = np.random.default_rng(m)
    values = rng.normal(size=(2 ** m, 2)) * np.array([1.0, 50.0])
    seg = random_segments(m, seed=m)
    e = KernelSHAP(n_samples=2 ** m, segmentation=seg, baseline=0.0, random_state=0).explain(
        game_adapter(values, seg, batch_size=97), np.ones(seg.shape, np.float32), target=[0, 1])
    np.testing.assert_allclose(e.segment_weights, brute_force_shapley(values), rtol=0, atol=1e-6)
    assert e.exact and e.n_queries == 2 ** m
    np.testing.assert_array_equal(e.errors, 0.0)
    np.testing.assert_allclose(e.base_value, values[0])
    np.testing.assert_allclose(e.attributions, e.segment_weights[:, seg])


def test_exact_mode_equals_brute_force_on_a_cnn(small_cnn):
    """8 superpixels of an image of the small CNN; the brute force renders every coalition itself."""
    torch = pytest.importorskip("torch")
    net = copy.deepcopy(small_cnn).double()

    def scores(batch):
        with torch.no_grad():
            return net(torch.as_tensor(np.asarray(batch), dtype=torch.float64)).numpy()

    x = np.random.default_rng(3).random((3, 20, 23)).astype(np.float32)
    seg = Grid((2, 4))(np.zeros((20, 23)))
    base = segment_mean(x, seg).astype(np.float32)
    codes = np.arange(256)
    z = ((codes[:, None] >> np.arange(8)) & 1).astype(np.float32)
    images = base[None] + z[:, seg][:, None] * (x - base)[None]
    exact = brute_force_shapley(scores(images))  # (classes, M)
    e = KernelSHAP(n_samples=256, segmentation=seg, random_state=0).explain(
        Callable(scores, batch_size=50), x, target=[0, 1, 2, 3, 4])
    np.testing.assert_allclose(e.segment_weights, exact, rtol=0, atol=1e-6)


def test_exact_mode_equals_brute_force_on_the_demo_cnn():
    """8 SLIC-free superpixels (a 2 x 4 grid) of a held-out image; the model runs in float64 on both sides."""
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("perturbx.models")
    from perturbx.datasets import make_shapes

    net = models.load_demo_model().double().eval()

    def scores(batch):
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(np.asarray(batch), dtype=torch.float64)), dim=1).numpy()

    x = make_shapes(1, random_state=models.DEMO_TEST_SEED).images[0]
    seg = Grid((2, 4))(np.zeros(x.shape[1:]))
    base = segment_mean(x, seg).astype(np.float32)
    z = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float32)
    exact = brute_force_shapley(scores(base[None] + z[:, seg][:, None] * (x - base)[None]))
    e = KernelSHAP(n_samples=300, segmentation=seg, random_state=0).explain(
        Callable(scores, batch_size=64), x, target=[0, 1, 2, 3])
    assert e.exact and e.n_queries == 256
    np.testing.assert_allclose(e.segment_weights, exact, rtol=0, atol=1e-6)
    assert np.abs(exact).max() > 1e-3  # a game with something to attribute


def test_linear_game_gets_coefficients_times_x_minus_baseline_when_sampling(rng):
    """For f linear in the pixels every design is exact: phi_j = sum over superpixel j of w * (x - b)."""
    w = rng.normal(size=(2, 3, 24, 24))
    x = rng.random((3, 24, 24)).astype(np.float32)
    seg = Grid((6, 5))(np.zeros((24, 24)))
    for baseline in ("mean", 0.3):
        e = KernelSHAP(n_samples=200, segmentation=seg, baseline=baseline, random_state=1).explain(
            Callable(linear_model(w)), x, target=[0, 1])
        b = segment_mean(x, seg) if baseline == "mean" else np.full_like(x, 0.3)
        delta = (w * (x.astype(np.float64) - b.astype(np.float32))[None]).sum(axis=1)  # (T, H, W)
        expected = np.stack([np.bincount(seg.ravel(), weights=d.ravel()) for d in delta])
        assert not e.exact and e.n_queries == 200
        np.testing.assert_allclose(e.segment_weights, expected, atol=1e-3, rtol=1e-4)  # float32 model input


def test_efficiency_holds_exactly_when_sampling(rng):
    seg = random_segments(12, shape=(8, 8))
    values = rng.normal(size=(2 ** 12, 3))
    e = KernelSHAP(n_samples=300, segmentation=seg, baseline=0.0, random_state=0).explain(
        game_adapter(values, seg), np.ones((8, 8), np.float32), target=[0, 1, 2])
    assert not e.exact
    np.testing.assert_allclose(e.segment_weights.sum(axis=1), e.scores - e.base_value, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e.scores, values[-1])
    np.testing.assert_allclose(e.base_value, values[0])


def smooth_game(m: int, seed: int = 0) -> np.ndarray:
    """A sigmoid of a random quadratic form of the coalition: an image-classifier-like game, (2**M, 1)."""
    rng = np.random.default_rng(seed)
    z = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1
    a, q = rng.normal(size=m) * 2, rng.normal(size=(m, m)) * 0.8
    return (1 / (1 + np.exp(-(z @ a + np.einsum("ni,ij,nj->n", z, q, z) / m - 1))))[:, None]


def test_error_estimate_is_calibrated_and_error_shrinks():
    m = 10
    values = smooth_game(m)
    exact = brute_force_shapley(values)[0]
    seg = random_segments(m)
    x = np.ones(seg.shape, np.float32)
    ratios, rms = [], {}
    for n in (150, 600):
        errs = []
        for seed in range(12):
            e = KernelSHAP(n_samples=n, segmentation=seg, baseline=0.0, random_state=seed).explain(
                game_adapter(values, seg, batch_size=256), x, target=0)
            errs.append(e.segment_weights[0] - exact)
            ratios.append(errs[-1] / e.errors[0])
        rms[n] = np.sqrt(np.mean(np.square(errs)))
    z = np.sqrt(np.mean(np.square(ratios)))  # standardised errors: about 1 when the standard error is right
    assert 0.6 < z < 1.6, z
    assert rms[600] < rms[150] / 1.6


def test_agrees_with_shap_kernel_explainer_on_the_same_game(small_cnn):
    """shap's superpixel recipe with the same segments and hide colour, equal queries (1000)."""
    shap = pytest.importorskip("shap")
    torch = pytest.importorskip("torch")
    from perturbx.adapters import Torch

    x = np.random.default_rng(5).random((3, 20, 23)).astype(np.float32)
    seg = Grid((4, 5))(np.zeros((20, 23)))
    base = segment_mean(x, seg).astype(np.float32)
    adapter = Torch(small_cnn, batch_size=100)
    e = KernelSHAP(n_samples=1000, segmentation=seg, random_state=0).explain(adapter, x)
    target = int(e.targets[0])

    def f(zs):
        images = base[None] + np.asarray(zs, np.float32)[:, seg][:, None] * (x - base)[None]
        with torch.no_grad():
            return small_cnn(torch.as_tensor(images)).numpy()[:, target]

    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phi = shap.KernelExplainer(f, np.zeros((1, 20))).shap_values(
            np.ones((1, 20)), nsamples=998, l1_reg=False, silent=True)[0]
    assert np.corrcoef(phi, e.segment_weights[0])[0, 1] >= 0.95


# ---- the design ---------------------------------------------------------------------------------------


def design(m: int, n: int, seed: int = 0):
    sampler = ShapleyKernelSampler(SegmentMap(np.arange(m)[None]), n, np.random.default_rng(seed))
    chunks = list(sampler.chunks(17))
    return sampler, *(np.concatenate([getattr(c, a) for c in chunks]) for a in ("z", "weights", "groups"))


def test_design_is_distinct_paired_and_weighs_each_size_by_its_kernel_mass():
    m, n = 14, 700
    sampler, z, w, g = design(m, n)
    assert sampler.n_total == len(z) <= n - 1 and not sampler.exact
    assert not z[0].any()  # the empty coalition (the baseline) comes first
    assert len(np.unique(z, axis=0)) == len(z)  # no coalition twice
    assert not (z.sum(axis=1) == m).any()  # the full coalition is the reference, never queried again
    random = np.flatnonzero(g >= 0)
    np.testing.assert_array_equal(z[random[0::2]] + z[random[1::2]], 1)  # antithetic pairs
    np.testing.assert_array_equal(g[random[0::2]], g[random[1::2]])
    sizes = z.sum(axis=1)
    kernel = shapley_kernel(m)
    for s in range(1, m):
        mass = kernel[s] * math.comb(m, s)
        assert w[sizes == s].sum() == pytest.approx(mass, rel=1e-12)
    full_sizes = [s for s in range(1, m) if (sizes == s).sum() == math.comb(m, s)]
    assert full_sizes[:2] == [1, 2] and m - 1 in full_sizes  # outer sizes enumerated
    assert (g[np.isin(sizes, full_sizes)] == -1).all()


def test_design_does_not_depend_on_chunk_size_and_follows_the_seed():
    sampler = ShapleyKernelSampler(SegmentMap(np.arange(20)[None]), 500, np.random.default_rng(4))
    a = np.concatenate([c.z for c in sampler.chunks(7)])
    b = np.concatenate([c.z for c in sampler.chunks(500)])
    np.testing.assert_array_equal(a, b)
    _, c, _, _ = design(20, 500, seed=5)
    assert not np.array_equal(a, c)


def test_exact_design_enumerates_every_coalition_once():
    sampler, z, w, _ = design(7, 10_000)
    assert sampler.exact and sampler.n_total == 2 ** 7 - 1
    codes = (z.astype(int) << np.arange(7)).sum(axis=1)
    np.testing.assert_array_equal(np.sort(codes), np.arange(127))
    np.testing.assert_allclose(w, shapley_kernel(7)[z.sum(axis=1)])


def test_masks_are_the_coalitions_painted_on_the_segments():
    seg = random_segments(5)
    sampler = ShapleyKernelSampler(SegmentMap(seg), 32, np.random.default_rng(0))
    for chunk in sampler.chunks(8):
        np.testing.assert_array_equal(chunk.materialize(NUMPY, np.float32), chunk.z[:, seg])


def test_same_seed_same_values_any_batch_size(rng):
    seg = random_segments(12, shape=(8, 8))
    values = rng.normal(size=(2 ** 12, 1))
    x = np.ones((8, 8), np.float32)
    a = KernelSHAP(n_samples=400, segmentation=seg, baseline=0.0, random_state=3).explain(
        game_adapter(values, seg, batch_size=64), x)
    b = KernelSHAP(n_samples=400, segmentation=seg, baseline=0.0, random_state=3).explain(
        game_adapter(values, seg, batch_size=33), x)
    np.testing.assert_allclose(a.segment_weights, b.segment_weights, rtol=1e-12)  # only the order of sums differs


# ---- bad input and edge cases ---------------------------------------------------------------------------


def test_constant_model_gets_zero_values_and_zero_error():
    x = np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)
    e = KernelSHAP(n_samples=60, segmentation=Grid((3, 3)), random_state=0).explain(
        Callable(lambda b: np.full((len(b), 2), 0.7)), x, target=[0, 1])
    np.testing.assert_array_equal(e.segment_weights, 0.0)
    np.testing.assert_array_equal(e.errors, 0.0)
    np.testing.assert_allclose(e.base_value, 0.7)


def test_too_few_samples_fail_before_any_perturbed_query(rng):
    x = rng.random((3, 12, 12)).astype(np.float32)
    spy = SpyAdapter(linear_model(rng.normal(size=(2, 3, 12, 12))))
    with pytest.raises(ValueError, match=r"'n_samples' parameter of KernelSHAP is 20.*36 Shapley.*>= 74"):
        KernelSHAP(n_samples=20, segmentation=Grid((6, 6))).explain(spy, x)
    assert spy.batch_sizes == [1]  # only the unperturbed input was scored


def test_segment_map_errors(rng):
    x = rng.random((3, 12, 12)).astype(np.float32)
    f = Callable(linear_model(rng.normal(size=(2, 3, 12, 12))))
    with pytest.raises(ValueError, match=r"shape \(12, 10\).*\(12, 12\)"):
        KernelSHAP(segmentation=np.zeros((12, 10), dtype=int)).explain(f, x)
    with pytest.raises(ValueError, match="single segment"):
        KernelSHAP(segmentation=np.ones((12, 12), dtype=int)).explain(f, x)


def test_constructor_errors():
    with pytest.raises(ValueError, match="'n_samples' parameter of KernelSHAP must be an int >= 4"):
        KernelSHAP(n_samples=2)
    with pytest.raises(ValueError, match="'segmentation' parameter of KernelSHAP"):
        KernelSHAP(segmentation="watershed")
    with pytest.raises(ValueError, match="'baseline' parameter of KernelSHAP"):
        KernelSHAP(baseline="median")


def test_max_queries_is_respected(rng):
    x = rng.random((3, 12, 12)).astype(np.float32)
    f = Callable(linear_model(rng.normal(size=(2, 3, 12, 12))))
    with pytest.raises(perturbx.QueryBudgetError):
        KernelSHAP(n_samples=100, segmentation=Grid((3, 3)), max_queries=50).explain(f, x)


# ---- shap interop -----------------------------------------------------------------------------------------


def test_to_shap_gives_an_explanation_that_image_plot_draws(rng):
    shap = pytest.importorskip("shap")
    plt = pytest.importorskip("matplotlib.pyplot")
    from perturbx.interop import to_shap

    w = rng.normal(size=(3, 3, 16, 16))
    x = rng.random((3, 16, 16)).astype(np.float32)
    e = KernelSHAP(n_samples=100, segmentation=Grid((4, 4)), random_state=0).explain(
        Callable(linear_model(w)), x, target=[0, 2])
    s = to_shap(e)
    assert isinstance(s, shap.Explanation)
    assert s.values.shape == (1, 16, 16, 3, 2) and s.data.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(np.moveaxis(s.values[0].sum(axis=2), -1, 0), e.attributions, atol=1e-12)
    np.testing.assert_allclose(s.data[0], np.moveaxis(x, 0, -1))
    np.testing.assert_allclose(s.base_values[0], e.base_value)
    assert list(s.output_names) == ["class 0", "class 2"]
    plt.switch_backend("Agg")
    shap.image_plot(s, show=False)
    assert len(plt.gcf().axes) == 4  # the image, two maps, the colour bar
    plt.close("all")


def test_to_shap_for_gray_images_and_methods_without_a_base_value(rng):
    pytest.importorskip("shap")
    from perturbx.explainers.lime import LIME
    from perturbx.interop import to_shap

    w = rng.normal(size=(2, 12, 12))
    x = rng.random((12, 12)).astype(np.float32)
    e = LIME(n_samples=60, segmentation=Grid((3, 3)), random_state=0).explain(
        Callable(linear_model(w), input_layout="HW"), x, target=1)
    s = to_shap(e, output_names=["dog"])
    assert s.values.shape == (1, 12, 12, 1, 1) and list(s.output_names) == ["dog"]
    np.testing.assert_allclose(s.base_values[0] + s.values.sum(), e.scores)  # additive by construction
    e.input = None
    with pytest.raises(ValueError, match="input=None"):
        to_shap(e)


def test_to_shap_checks_output_names(rng):
    pytest.importorskip("shap")
    from perturbx.interop import to_shap

    x = rng.random((3, 12, 12)).astype(np.float32)
    e = KernelSHAP(n_samples=40, segmentation=Grid((2, 2)), random_state=0).explain(
        Callable(linear_model(rng.normal(size=(2, 3, 12, 12)))), x, target=[0, 1])
    with pytest.raises(ValueError, match="output_names has 1 names but the explanation has 2 targets"):
        to_shap(e, output_names=["cat"])


# ---- logistic control variate -----------------------------------------------------------------------------


def third_order_game(m: int, seed: int = 0) -> np.ndarray:
    """A random game with interactions of order up to three only, on every coalition: (2**M, 1)."""
    rng = np.random.default_rng(seed)
    z = ((np.arange(2 ** m)[:, None] >> np.arange(m)) & 1).astype(float)
    v = z @ rng.normal(size=m)
    for i, j, k in rng.integers(0, m, size=(25, 3)):
        v += rng.normal() * z[:, i] * z[:, j] + rng.normal() * z[:, i] * z[:, j] * z[:, k]
    return v[:, None]


def test_third_order_fit_is_exact_for_games_with_three_way_interactions_and_is_chosen():
    m = 10  # P = 10 + 45 + 120 = 175 parameters
    values = third_order_game(m)
    exact = brute_force_shapley(values)[0]
    seg = random_segments(m)
    x = np.ones(seg.shape, np.float32)
    auto = KernelSHAP(n_samples=400, segmentation=seg, baseline=0.0, random_state=0).explain(
        game_adapter(values, seg, batch_size=128), x, target=0)
    linear = KernelSHAP(n_samples=400, segmentation=seg, baseline=0.0, interactions=False, random_state=0).explain(
        game_adapter(values, seg, batch_size=128), x, target=0)
    assert auto.estimate[0] == "third-order" and linear.estimate[0] == "linear"
    np.testing.assert_allclose(auto.segment_weights[0], exact, atol=1e-8)
    assert np.abs(linear.segment_weights[0] - exact).max() > 1e-3  # the linear fit is not exact here
    np.testing.assert_allclose(auto.segment_weights.sum(), auto.scores - auto.base_value, atol=1e-9)
    assert auto.errors.max() < 1e-8


def test_third_order_error_estimate_is_calibrated():
    m = 10
    values = smooth_game(m, seed=5) * 3 - 1  # not probabilities: no logistic control variate
    exact = brute_force_shapley(values)[0]
    seg = random_segments(m)
    x = np.ones(seg.shape, np.float32)
    ratios, chosen = [], set()
    for seed in range(10):
        e = KernelSHAP(n_samples=600, segmentation=seg, baseline=0.0, interactions=True, random_state=seed).explain(
            game_adapter(values, seg, batch_size=600), x, target=0)
        ratios.append((e.segment_weights[0] - exact) / e.errors[0])
        chosen.add(e.estimate[0])
    assert chosen == {"third-order"}
    assert 0.35 < np.sqrt(np.mean(np.square(ratios))) < 1.6  # the jackknife errs on the safe side here


def test_control_variate_cuts_the_error_on_probabilities_and_keeps_efficiency():
    m = 12
    values = smooth_game(m, seed=1)  # probabilities: a sigmoid of a quadratic form
    exact = brute_force_shapley(values)[0]
    seg = random_segments(m, shape=(8, 8))
    x = np.ones(seg.shape, np.float32)
    err = {True: [], False: []}
    for cv in (True, False):
        for seed in range(6):
            e = KernelSHAP(n_samples=200, segmentation=seg, baseline=0.0, control_variate=cv,
                           random_state=seed).explain(game_adapter(values, seg, batch_size=256), x, target=0)
            err[cv].append(np.linalg.norm(e.segment_weights[0] - exact))
            assert e.estimate[0] == ("logistic" if cv else "linear")
            np.testing.assert_allclose(e.segment_weights.sum(), e.scores - e.base_value, atol=1e-12)
    assert np.mean(err[True]) < np.mean(err[False]) / 2


def test_control_variate_is_not_used_for_scores_outside_0_1(rng):
    m = 8
    values = smooth_game(m) * 3 - 1  # not probabilities
    seg = random_segments(m)
    e = KernelSHAP(n_samples=100, segmentation=seg, baseline=0.0, random_state=0).explain(
        game_adapter(values, seg), np.ones(seg.shape, np.float32))
    assert e.estimate[0] == "linear"
    with pytest.raises(TypeError, match="'control_variate' parameter of KernelSHAP must be True or False"):
        KernelSHAP(control_variate="yes")
    with pytest.raises(ValueError, match="'interactions' parameter of KernelSHAP must be 'auto', True or False"):
        KernelSHAP(interactions=3)


# ---- permutation sampling ---------------------------------------------------------------------------------


def test_shapley_sampling_is_exact_for_linear_games_and_efficient(rng):
    from perturbx.explainers.shapley_sampling import ShapleySampling

    w = rng.normal(size=(2, 3, 24, 24))
    x = rng.random((3, 24, 24)).astype(np.float32)
    seg = Grid((4, 5))(np.zeros((24, 24)))
    e = ShapleySampling(n_samples=200, segmentation=seg, random_state=0).explain(
        Callable(linear_model(w)), x, target=[0, 1])
    b = segment_mean(x, seg).astype(np.float32)
    delta = (w * (x.astype(np.float64) - b)[None]).sum(axis=1)
    expected = np.stack([np.bincount(seg.ravel(), weights=d.ravel()) for d in delta])
    assert e.n_queries == 2 + 2 * 5 * 19  # (200 - 2) // (2 * 19) = 5 pairs of permutations
    np.testing.assert_allclose(e.segment_weights, expected, atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(e.segment_weights.sum(axis=1), e.scores - e.base_value, atol=1e-9)


def test_shapley_sampling_converges_with_a_calibrated_error_any_batch_size():
    from perturbx.explainers.shapley_sampling import ShapleySampling

    m = 8
    values = smooth_game(m, seed=3)
    exact = brute_force_shapley(values)[0]
    seg = random_segments(m)
    x = np.ones(seg.shape, np.float32)
    ratios = []
    for seed in range(10):
        e = ShapleySampling(n_samples=400, segmentation=seg, baseline=0.0, random_state=seed).explain(
            game_adapter(values, seg, batch_size=50), x, target=0)
        ratios.append((e.segment_weights[0] - exact) / e.errors[0])
    assert 0.6 < np.sqrt(np.mean(np.square(ratios))) < 1.6
    a = ShapleySampling(n_samples=400, segmentation=seg, baseline=0.0, random_state=1).explain(
        game_adapter(values, seg, batch_size=7), x, target=0)
    b = ShapleySampling(n_samples=400, segmentation=seg, baseline=0.0, random_state=1).explain(
        game_adapter(values, seg, batch_size=400), x, target=0)
    np.testing.assert_allclose(a.segment_weights, b.segment_weights, rtol=1e-12)
    with pytest.raises(ValueError, match=r"'n_samples' parameter of ShapleySampling is 10.*>= 16"):
        ShapleySampling(n_samples=10, segmentation=seg).explain(game_adapter(values, seg), x)


def test_logistic_surrogate_values_are_exact():
    from perturbx.estimators.logistic_game import LogisticGame

    rng = np.random.default_rng(0)
    m = 9
    coef, pair = rng.normal(size=m), np.triu(rng.normal(size=(m, m)), 1)
    pair += pair.T
    z = (np.arange(2 ** m)[:, None] >> np.arange(m)) & 1
    game = 1 / (1 + np.exp(-(-0.7 + z @ coef + 0.5 * np.einsum("ni,ij,nj->n", z, pair, z))))
    exact = brute_force_shapley(game[:, None])[0]
    np.testing.assert_allclose(LogisticGame(-0.7, coef, pair).shapley(), exact, atol=1e-14)
    np.testing.assert_allclose(LogisticGame(-0.7, coef, pair)(z), game, rtol=1e-12)


def test_sampled_surrogate_values_agree_with_enumeration():
    from perturbx.estimators.logistic_game import LogisticGame, sampled_shapley

    game = _curved_game()
    m, coef = len(game.coef), game.coef
    exact = game.shapley()
    sampled = sampled_shapley(game, n_orders=4096, seed=3)
    spread = np.linalg.norm(exact - exact.mean())
    assert np.linalg.norm(sampled - exact) < 0.025 * spread
    assert np.linalg.norm(sampled_shapley(game, n_orders=65536, seed=3) - exact) < 0.008 * spread
    np.testing.assert_array_equal(sampled, sampled_shapley(game, n_orders=4096, seed=3))
    additive = LogisticGame(-1.5, coef, np.zeros((m, m)))  # each size's gains differ only through the mean
    assert np.abs(sampled_shapley(additive, 512) - additive.shapley()).max() < 0.01 * np.abs(coef).max()


def test_logistic_surrogate_fit_recovers_a_logistic_game_and_screens_pairs():
    from perturbx.estimators.logistic_game import LogisticGame, fit_logistic_game, screen_pairs

    rng = np.random.default_rng(2)
    m = 20
    pairs = screen_pairs(np.arange(m) - 10.0, n_rows=4 * (1 + m + 10))
    assert len(pairs) == 10 and set(pairs.ravel()) == {0, 1, 2, 18, 19}  # the 5 largest |importance|
    assert len(screen_pairs(np.ones(m), 4 * (m + 1))) == 0 and len(screen_pairs(np.ones(100), 10 ** 6)) <= 120
    truth = np.zeros((m, m))
    truth[pairs[:, 0], pairs[:, 1]] = rng.normal(size=len(pairs))
    game = LogisticGame(-0.5, rng.normal(size=m), truth + truth.T)
    z = (rng.random((400, m)) < 0.5).astype(float)
    fit = fit_logistic_game(z, game(z), rng.random(400) + 0.5, pairs, ridge=0.0)
    np.testing.assert_allclose(fit.coef, game.coef, atol=1e-6)
    np.testing.assert_allclose(fit.pair, game.pair, atol=1e-6)


def test_logistic_surrogate_fit_stops_at_a_stationary_point_of_its_objective():
    """Gauss-Newton stops early once its steps are negligible: the fit must then be the objective's minimum."""
    from perturbx.estimators.logistic_game import fit_logistic_game, screen_pairs

    rng = np.random.default_rng(4)
    m, n = 25, 600
    z = (rng.random((n, m)) < 0.5).astype(float)
    y = np.clip(1 / (1 + np.exp(-(z @ rng.normal(0, 0.5, m) - 1))) + rng.normal(0, 0.05, n), 0.01, 0.99)
    w, pairs, ridge = rng.random(n) + 0.5, screen_pairs(rng.normal(size=m), n), 1e-3
    fit = fit_logistic_game(z, y, w, pairs, ridge=ridge)
    x = np.hstack([np.ones((n, 1)), z, z[:, pairs[:, 0]] * z[:, pairs[:, 1]]])
    theta = np.r_[fit.offset, fit.coef, fit.pair[pairs[:, 0], pairs[:, 1]]]
    q = 1 / (1 + np.exp(-(x @ theta)))
    penalty = ridge * w.mean() * np.r_[0.0, np.ones(len(theta) - 1)]
    gradient = (x * (q * (1 - q) * w)[:, None]).T @ (y - q) - penalty * theta  # half the objective's, negated
    assert np.abs(gradient).max() < 1e-9 * np.abs((x * w[:, None]).T @ y).max()


def test_control_variate_with_many_superpixels_samples_the_surrogate_and_keeps_efficiency():
    """M = 30 (surrogate values sampled, not enumerated) on a logistic game with pairwise terms."""
    from perturbx.estimators.logistic_game import LogisticGame

    m = 30
    rng = np.random.default_rng(5)
    pair = np.zeros((m, m))
    pair[:4, :4] = np.triu(rng.normal(0, 1.0, (4, 4)), 1)
    game = LogisticGame(-2.0, rng.normal(0, 0.4, m), pair + pair.T)
    seg = random_segments(m, shape=(6, 10))
    first = [int(np.flatnonzero(seg.ravel() == j)[0]) for j in range(m)]
    model = Callable(lambda batch: game(batch.reshape(len(batch), -1)[:, first] > 0.5)[:, None],
                     input_layout="HW", batch_size=256)
    x = np.ones(seg.shape, np.float32)
    kw = {"segmentation": seg, "baseline": 0.0}
    truth = KernelSHAP(n_samples=60_000, control_variate=False, random_state=99, **kw).explain(
        model, x, target=0).segment_weights[0]
    err = {True: [], False: []}
    for cv in (True, False):
        for seed in range(4):
            e = KernelSHAP(n_samples=600, control_variate=cv, random_state=seed, **kw).explain(model, x, target=0)
            err[cv].append(np.linalg.norm(e.segment_weights[0] - truth))
            np.testing.assert_allclose(e.segment_weights.sum(), e.scores - e.base_value, atol=1e-12)
            assert e.estimate[0] == ("logistic" if cv else "linear")
    assert np.mean(err[True]) < np.mean(err[False]) / 2


def _surrogate_errors(game, exact, n_orders: int, seeds: int = 12, **kwargs) -> tuple[float, float]:
    """Root mean square over seeds of the sampled values' actual error and of their reported error (norms)."""
    from perturbx.estimators.logistic_game import sampled_shapley

    actual, reported = [], []
    for seed in range(seeds):
        phi, error = sampled_shapley(game, n_orders, seed, with_error=True, **kwargs)
        actual.append(np.linalg.norm(phi - exact))
        reported.append(np.linalg.norm(error))
    return float(np.sqrt(np.mean(np.square(actual)))), float(np.sqrt(np.mean(np.square(reported))))


def _curved_game(m: int = 14):
    from perturbx.estimators.logistic_game import LogisticGame

    rng = np.random.default_rng(1)
    coef, pair = rng.normal(0, 0.6, size=m), np.triu(rng.normal(0, 0.3, size=(m, m)), 1)
    return LogisticGame(-1.5, coef, pair + pair.T)


def test_surrogate_taylor_control_variate_is_unbiased_and_closer():
    """The control variate has mean zero (many orders converge to enumeration) and halves the error at 1,024."""
    from perturbx.estimators.logistic_game import LogisticGame, sampled_shapley

    game = _curved_game()
    exact = game.shapley()
    with_cv, _ = _surrogate_errors(game, exact, 1024)
    without, _ = _surrogate_errors(game, exact, 1024, control_variate=False)
    assert with_cv < 0.6 * without, (with_cv, without)
    spread = np.linalg.norm(exact - exact.mean())
    assert np.linalg.norm(sampled_shapley(game, 65536, seed=5) - exact) < 0.004 * spread
    # a nearly additive surrogate (log-odds within a narrow range) is almost exact with few orders
    rng = np.random.default_rng(2)
    flat = LogisticGame(-0.6, rng.normal(0, 0.02, size=50), np.zeros((50, 50)))
    reference = sampled_shapley(flat, 16384, seed=1, control_variate=False)
    assert np.linalg.norm(sampled_shapley(flat, 256) - reference) < 0.01 * np.linalg.norm(reference - reference.mean())


def test_surrogate_error_estimate_is_calibrated_and_tolerance_is_met():
    from perturbx.estimators.logistic_game import MIN_ORDERS, sampled_shapley

    game = _curved_game()
    exact = game.shapley()
    for kwargs in ({}, {"control_variate": False}):
        actual, reported = _surrogate_errors(game, exact, 512, **kwargs)
        assert 0.7 * actual <= reported <= 1.4 * actual, (kwargs, actual, reported)
    big = _curved_game(24)  # above EXACT_MAX_PLAYERS: sampled
    reference = sampled_shapley(big, 65536, seed=7)
    for tolerance in (0.05, 0.01):
        phi, error = big.shapley_within(tolerance)
        assert np.linalg.norm(error) <= tolerance and np.linalg.norm(phi - reference) < tolerance
    loose, _ = big.shapley_within(10.0)  # met at once: the fewest orders
    np.testing.assert_array_equal(loose, sampled_shapley(big, MIN_ORDERS, 0))
