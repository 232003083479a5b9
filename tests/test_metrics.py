"""Metrics on cases computed by hand, against Captum where it has the same metric, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from perturbx import Explanation
from perturbx.adapters import Callable
from perturbx.backend import NUMPY
from perturbx.baselines import Blur
from perturbx.metrics import (
    deletion,
    energy_pointing,
    infidelity,
    insertion,
    max_sensitivity,
    model_randomization,
    pointing_game,
)
from perturbx.metrics.sanity import layer_seed, spearman
from perturbx.samplers import RandomGridSampler

from .conftest import SpyAdapter, linear_model


def _explanation(amap: np.ndarray, target: int | list[int] = 0) -> Explanation:
    targets = np.atleast_1d(np.asarray(target))
    return Explanation(attributions=amap, targets=targets, n_queries=0, seconds=0.0, method="hand", params={},
                       scores=np.zeros(len(targets)))


# --- deletion / insertion ---------------------------------------------------------------------------


def test_deletion_and_insertion_of_a_linear_model_by_hand():
    w = np.array([[[4.0, 3.0], [2.0, 1.0]]])  # one class, one channel, 2 x 2 pixels
    model = Callable(linear_model(w[None]), batch_size=2)
    x = np.ones((1, 2, 2), np.float32)
    d = deletion(model, x, w[0], target=0, step=1)
    np.testing.assert_allclose(d.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(d.scores, [10, 6, 3, 1, 0])
    assert d.auc == pytest.approx(0.25 * (8 + 4.5 + 2 + 0.5))  # 3.75
    assert d.n_queries == 5
    i = insertion(model, x, w[0], target=0, step=1, substrate=0.0)
    np.testing.assert_allclose(i.scores, [0, 4, 7, 9, 10])
    assert i.auc == pytest.approx(6.25)
    assert i.n_queries == 5
    assert insertion(model, x, w[0], step=1, substrate=0.0).n_queries == 6  # + the input, for the top class
    top = deletion(model, x, w[0], step=1)  # top class from the first point, no extra query
    np.testing.assert_allclose(top.scores, d.scores)
    assert top.n_queries == 5 and top.target == 0


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_deletion_curve_equals_the_cumulative_contributions(rng, batch_size):
    w = rng.normal(size=(2, 3, 8, 8))
    x = rng.random((3, 8, 8)).astype(np.float32)
    attribution = rng.normal(size=(8, 8))
    spy = SpyAdapter(linear_model(w), batch_size=batch_size)
    curve = deletion(spy, x, attribution, target=1, step=5)
    contrib = (w[1] * x).sum(axis=0).ravel()[np.argsort(-attribution.ravel(), kind="stable")]
    removed = np.concatenate([[0.0], np.cumsum(contrib)])[np.minimum(np.arange(14) * 5, 64)]
    np.testing.assert_allclose(curve.scores, contrib.sum() - removed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(curve.fractions[-2:], [60 / 64, 1.0])
    assert curve.n_queries == 14 and max(spy.batch_sizes) <= batch_size


def test_insertion_starts_from_the_blur_substrate(rng):
    w = rng.normal(size=(1, 3, 8, 8))
    x = rng.random((3, 8, 8)).astype(np.float32)
    curve = insertion(Callable(linear_model(w)), x, rng.normal(size=(8, 8)), target=0)
    blurred = Blur()(x.astype(np.float64), rng).astype(np.float32)
    assert curve.scores[0] == pytest.approx(float((w[0] * blurred).sum()), rel=1e-5)
    assert curve.scores[-1] == pytest.approx(float((w[0] * x).sum()), rel=1e-5)
    assert len(curve.scores) == 8 + 1  # default step: one row (8 px)


def test_curve_on_a_torch_model_equals_the_numpy_one(rng):
    torch = pytest.importorskip("torch")
    from perturbx.adapters import Torch

    w = rng.normal(size=(3, 3, 6, 6)).astype(np.float32)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 3, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.as_tensor(w.reshape(3, -1)))
    x = rng.random((3, 6, 6)).astype(np.float32)
    a = rng.normal(size=(6, 6))
    ours = deletion(Torch(net, batch_size=4), x, a, target=2, step=4).scores
    ref = deletion(Callable(linear_model(w)), x, a, target=2, step=4).scores
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_curve_takes_the_target_of_the_explanation(rng):
    w = rng.normal(size=(3, 1, 4, 4))
    curve = deletion(Callable(linear_model(w)), rng.random((1, 4, 4)), _explanation(rng.normal(size=(4, 4)), 2))
    assert curve.target == 2


def test_curve_errors(rng):
    model = Callable(linear_model(rng.normal(size=(2, 1, 4, 4))))
    x = rng.random((1, 4, 4))
    with pytest.raises(ValueError, match="spatial size is"):
        deletion(model, x, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="pass e.attributions"):
        deletion(model, x, _explanation(np.zeros((2, 4, 4)), [0, 1]))
    with pytest.raises(ValueError, match="'step' parameter of deletion must be an int >= 1"):
        deletion(model, x, np.zeros((4, 4)), step=0)
    with pytest.raises(ValueError, match="'target' argument of insertion is 5 but the model returns fewer"):
        insertion(model, x, np.zeros((4, 4)), target=5)
    with pytest.raises(ValueError, match="'target' argument of infidelity is 2 but the model returns 2 classes"):
        infidelity(model, x, np.zeros((4, 4)), target=2)
    with pytest.raises(TypeError, match="'target' argument of deletion must be a non-negative int"):
        deletion(model, x, np.zeros((4, 4)), target=-1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        deletion(model, x, np.full((4, 4), np.nan))


# --- pointing game / energy -------------------------------------------------------------------------


def _disk_mask(size=64, centre=(20, 20), radius=6):
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_pointing_game_hits_a_map_equal_to_the_mask():
    mask = _disk_mask()
    assert pointing_game(mask.astype(float), mask) and pointing_game(mask.astype(float), mask, tolerance=0)


def test_pointing_game_tolerance_in_pixels():
    mask = _disk_mask()  # the object reaches column 26 on row 20
    near, far = np.zeros((64, 64)), np.zeros((64, 64))
    near[20, 36] = 1.0  # 10 px from the object
    far[20, 46] = 1.0  # 20 px from the object
    assert pointing_game(near, mask) and not pointing_game(near, mask, tolerance=0)
    assert pointing_game(near, mask, tolerance=10) and not pointing_game(near, mask, tolerance=9.9)
    assert not pointing_game(far, mask)
    assert np.isnan(pointing_game(near, np.zeros((64, 64), bool)))  # no object: NaN, never a hit


def test_energy_pointing_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    a = np.zeros((4, 4))
    a[0, 0], a[3, 3], a[1, 1] = 3.0, 1.0, -5.0  # negative values do not count
    assert energy_pointing(a, mask) == pytest.approx(0.75)
    assert energy_pointing(mask.astype(float), mask) == 1.0
    assert energy_pointing((~mask).astype(float), mask) == 0.0
    assert np.isnan(energy_pointing(-np.ones((4, 4)), mask))


def test_localisation_errors():
    with pytest.raises(ValueError, match="'tolerance' argument of pointing_game"):
        pointing_game(np.zeros((4, 4)), np.ones((4, 4), bool), tolerance=-1)
    with pytest.raises(ValueError, match="'mask' argument of energy_pointing has shape"):
        energy_pointing(np.zeros((4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="must be boolean"):
        pointing_game(np.zeros((2, 2)), np.full((2, 2), 0.5))


# --- infidelity / max-sensitivity -------------------------------------------------------------------


def test_infidelity_of_the_exact_map_of_a_linear_model_is_zero(rng):
    w = rng.normal(size=(2, 3, 8, 8))
    x = rng.random((3, 8, 8)).astype(np.float32)
    exact = (w[0] * (x - 0.25)).sum(axis=0)
    model = Callable(linear_model(w), batch_size=7)
    scale = float(np.mean(exact**2))
    for normalize in (True, False):
        assert infidelity(model, x, exact, target=0, baseline=0.25, normalize=normalize) < 1e-9 * scale


def test_infidelity_by_hand_for_scaled_maps(rng):
    w = rng.normal(size=(1, 3, 8, 8))
    x = rng.random((3, 8, 8)).astype(np.float32)
    exact = (w[0] * x).sum(axis=0)
    model = Callable(linear_model(w))
    # errors are +drop for the doubled map and -drop for the zero map: equal squares, equal means
    twice = infidelity(model, x, 2 * exact, target=0, normalize=False)
    zero = infidelity(model, x, 0 * exact, target=0, normalize=False)
    assert twice == pytest.approx(zero, rel=1e-5) and twice > 0
    assert infidelity(model, x, 3 * exact, target=0) < 1e-9 * twice  # normalised: the scale does not matter


def test_infidelity_matches_captum_on_the_same_perturbations(rng):
    torch = pytest.importorskip("torch")
    captum_metrics = pytest.importorskip("captum.metrics")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 64, 3)).double()
    x = (0.5 + 0.5 * rng.random((1, 8, 8)))
    amap = rng.normal(size=(8, 8))
    fn = lambda b: net(torch.as_tensor(b, dtype=torch.float64)).detach().numpy()  # noqa: E731
    n = 40
    sampler = RandomGridSampler((8, 8), n, (4, 4), 0.7, np.random.default_rng(3))  # what infidelity draws
    keep = next(sampler.chunks(n)).materialize(NUMPY, np.float32)
    removal = torch.as_tensor((1.0 - keep.astype(np.float64))[:, None] * x[None])

    def perturb(inputs):
        return removal, inputs - removal

    for normalize in (False, True):
        ours = infidelity(Callable(fn), x, amap, target=1, n_perturbations=n, normalize=normalize, random_state=3)
        attributions = torch.as_tensor(amap / x[0])[None, None]  # sum(I * A) = sum(M * x * a / x) = sum(M * a)
        ref = captum_metrics.infidelity(net, perturb, torch.as_tensor(x[None]), attributions, target=1,
                                        n_perturb_samples=n, max_examples_per_batch=n, normalize=normalize)
        assert ours == pytest.approx(float(ref), rel=1e-4)


class _ConstantExplainer:
    def explain(self, model, x, target=None):
        return _explanation(np.full(x.shape[-2:], 2.0), 0 if target is None else target)


class _InputExplainer:
    def explain(self, model, x, target=None):
        return _explanation(np.asarray(x, np.float64).sum(axis=0), 0 if target is None else target)


def test_max_sensitivity_of_a_constant_map_is_zero(rng):
    model = Callable(linear_model(rng.normal(size=(2, 3, 5, 5))))
    assert max_sensitivity(model, _ConstantExplainer(), rng.random((3, 5, 5)), radius=0.5) == 0.0


def test_max_sensitivity_by_hand(rng):
    model = Callable(linear_model(rng.normal(size=(2, 3, 5, 5))))
    x = rng.random((3, 5, 5)).astype(np.float32)
    noise = np.random.default_rng(7)
    steps = [noise.uniform(-0.1, 0.1, size=x.shape).astype(np.float32) for _ in range(4)]
    a0 = x.astype(np.float64).sum(axis=0)
    expected = max(np.linalg.norm((x + u).astype(np.float64).sum(axis=0) - a0) for u in steps)
    ours = max_sensitivity(model, _InputExplainer(), x, radius=0.1, n_samples=4, random_state=7)
    assert ours == pytest.approx(expected / np.linalg.norm(a0), rel=1e-5)
    absolute = max_sensitivity(model, _InputExplainer(), x, radius=0.1, n_samples=4, random_state=7, relative=False)
    assert absolute == pytest.approx(expected, rel=1e-5)


def test_robustness_errors(rng):
    model = Callable(linear_model(rng.normal(size=(2, 1, 4, 4))))
    x = rng.random((1, 4, 4))
    with pytest.raises(ValueError, match="'radius' argument of max_sensitivity"):
        max_sensitivity(model, _ConstantExplainer(), x, radius=0)
    with pytest.raises(TypeError, match="explain\\(model, x, target\\)"):
        max_sensitivity(model, object(), x)
    with pytest.raises(ValueError, match="'n_perturbations' parameter of infidelity"):
        infidelity(model, x, np.zeros((4, 4)), n_perturbations=0)
    with pytest.raises(ValueError, match="'p_keep' parameter of infidelity"):
        infidelity(model, x, np.zeros((4, 4)), p_keep=0.0)


# --- model randomisation -----------------------------------------------------------------------------


def _scaled_linear(torch, d: int, n_classes: int = 3):
    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = torch.nn.Parameter(torch.tensor(1.5))

        def forward(self, x):
            return x * self.s

    torch.manual_seed(0)
    return torch.nn.Sequential(Scale(), torch.nn.Flatten(), torch.nn.Linear(d, n_classes, bias=False))


def test_model_randomization_cascade_by_hand(rng):
    torch = pytest.importorskip("torch")
    from perturbx import Occlusion

    net = _scaled_linear(torch, 36)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = rng.random((1, 6, 6)).astype(np.float32) + 0.5
    explainer = Occlusion(window=(1, 1), stride=(1, 1))
    result = model_randomization(net, explainer, x, target=1, random_state=5)
    assert result.layers == ["2", "0"] and result.target == 1 and result.maps.shape == (3, 6, 6)
    # occlusion of one pixel of a linear model: s * w_1 * x
    w = net[2].weight.detach().numpy()[1].reshape(6, 6)
    np.testing.assert_allclose(result.maps[0], 1.5 * w * x[0], rtol=1e-5, atol=1e-6)
    fresh = torch.nn.Linear(36, 3, bias=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer_seed(5, 0))  # the first layer of the cascade
        fresh.reset_parameters()
    w_new = fresh.weight.detach().numpy()[1].reshape(6, 6)
    assert result.spearman[0] == pytest.approx(spearman(w * x[0], w_new * x[0]))
    # re-drawing the scalar layer can only flip the sign of the map: same |rho|
    assert abs(result.spearman[1]) == pytest.approx(abs(result.spearman[0]))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_model_randomization_of_a_trained_linear_map_drifts_to_zero(rng):
    torch = pytest.importorskip("torch")
    from perturbx import Occlusion

    net = _scaled_linear(torch, 400)
    result = model_randomization(net, Occlusion(window=(1, 1), stride=(1, 1)), rng.random((1, 20, 20)) + 0.5,
                                 target=0, layers=["2"])
    assert abs(result.spearman[0]) < 0.3  # 400 pixels: |rho| of independent maps is about 0.05


def test_model_randomization_errors(rng):
    torch = pytest.importorskip("torch")
    from perturbx import Occlusion

    with pytest.raises(TypeError, match="'model' argument of model_randomization must be a torch.nn.Module"):
        model_randomization(Callable(lambda b: b.reshape(len(b), -1)), Occlusion(), rng.random((1, 4, 4)))
    with pytest.raises(ValueError, match="names \\['fc'\\]"):
        model_randomization(_scaled_linear(torch, 16), Occlusion(window=1, stride=1), rng.random((1, 4, 4)),
                            layers=["fc"])


def test_spearman_of_a_constant_map_is_nan():
    assert np.isnan(spearman(np.ones((3, 3)), np.arange(9.0)))
    assert spearman(np.arange(9.0), -np.arange(9.0)) == pytest.approx(-1.0)
