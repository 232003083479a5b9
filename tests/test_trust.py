"""Tests of trust: input invariance (Kindermans et al.), fragility (Ghorbani et al.), class sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable, Torch
from perturbx.metrics import trust

torch = pytest.importorskip("torch")
G = pytest.importorskip("perturbx.gradients")
models = pytest.importorskip("perturbx.models")
from torch import nn  # noqa: E402

from perturbx.datasets import make_shapes  # noqa: E402
from perturbx.metrics.specs import Case  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo():
    """The trained demo CNN (first layer: a zero-padded 5x5 convolution without bias) and a held-out image."""
    return models.load_demo_model().eval(), make_shapes(1, random_state=models.DEMO_TEST_SEED).images[0]


def forward(net, x):
    with torch.no_grad():
        return net(torch.as_tensor(np.asarray(x, dtype=np.float32))[None])[0].double().numpy()


# --- input invariance -----------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [-1.0, np.array([0.5, -0.25, 2.0])])
def test_the_shifted_model_computes_the_same_function(demo, shift):
    net, x = demo
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shifted = trust.shifted_model(net, x, shift)
    c = np.asarray(shift, dtype=np.float32).reshape(-1, 1, 1) if np.ndim(shift) else np.float32(shift)
    np.testing.assert_allclose(forward(shifted, x + c), forward(net, x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(forward(shifted, x), forward(net, x), atol=1e-3)
    conv = shifted.features[0].conv                    # still a convolution, reading the shifted input itself
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None and conv.padding == (0, 0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_linear_first_layer_absorbs_any_shift(rng):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x, c = rng.random((3, 2, 2), dtype=np.float32), rng.normal(size=(3, 2, 2)).astype(np.float32)
    shifted = trust.shifted_model(Torch(net, batch_size=7), x, c)
    assert isinstance(shifted, Torch) and shifted.batch_size == 7
    np.testing.assert_allclose(forward(shifted.module, x + c), forward(net, x), rtol=1e-5, atol=1e-6)


#: method -> passes? (Kindermans et al. 2019: the gradient and methods whose reference moves with the input pass)
PAPER = {
    "saliency": (lambda: G.Saliency(), True),
    "guided_backprop": (lambda: G.GuidedBackprop(), True),
    "gradcam": (lambda: G.GradCAM(), True),
    "ig_blur_baseline": (lambda: G.IntegratedGradients(n_steps=16, baseline="blur"), True),
    "occlusion_mean": (lambda: perturbx.Occlusion(window=(8, 8), stride=(4, 4), baseline="mean"), True),
    "input_x_gradient": (lambda: G.InputXGradient(), False),
    "ig_zero_baseline": (lambda: G.IntegratedGradients(n_steps=16), False),
    "deeplift_zero_baseline": (lambda: G.DeepLIFT(), False),
    "lrp": (lambda: G.LRP("epsilon_plus"), False),
    "occlusion_zero": (lambda: perturbx.Occlusion(window=(8, 8), stride=(4, 4)), False),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_input_invariance_per_method_as_in_the_paper(demo, name):
    net, x = demo
    factory, passes = PAPER[name]
    result = trust.input_invariance(Torch(net), factory(), x)
    assert result.passed is passes, result.error
    assert (result.error < 1e-4) if passes else (result.error > 0.05)
    assert result.maps.shape == (2, 64, 64) and result.target == int(np.argmax(forward(net, x)))


def test_input_invariance_errors(demo, rng):
    net, x = demo
    with pytest.raises(TypeError, match="The 'model' argument of input_invariance must be a torch.nn.Module"):
        trust.input_invariance(Callable(lambda b: b.reshape(len(b), -1)[:, :3]), G.Saliency(), x)
    with pytest.raises(TypeError, match="The 'explainer' argument of input_invariance must have an explain"):
        trust.input_invariance(net, object(), x)
    with pytest.raises(ValueError, match="varies over pixels, which the bias of the first convolution cannot"):
        trust.input_invariance(net, G.Saliency(), x, shift=rng.random(x.shape))
    with pytest.raises(ValueError, match=r"one value per channel \(3,\) or an array of the sample's shape"):
        trust.input_invariance(net, G.Saliency(), x, shift=[1.0, 2.0])
    with pytest.raises(ValueError, match="The 'tolerance' argument of input_invariance must be a number >= 0"):
        trust.input_invariance(net, G.Saliency(), x, tolerance=-1)

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 2, 3), nn.Linear(2 * 62 * 62, 2)

        def forward(self, z):
            return self.fc(self.conv(2 * z).flatten(1))

    with pytest.raises(ValueError, match="This model's first layer is 'conv', which does not read the input itself"):
        trust.input_invariance(Scaled(), G.Saliency(), x)


# --- fragility ------------------------------------------------------------------------------------

def test_top_k_overlap_by_hand():
    a = np.array([[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]])
    assert trust.top_k_overlap(a, a, 2) == 1.0
    assert trust.top_k_overlap(a, a[::-1, ::-1], 2) == 0.0
    assert trust.top_k_overlap(a, np.array([[5.0, 0, 3.0], [9.0, 1, 0]]), 2) == 0.5


def test_random_perturbations_stay_in_the_ball_and_keep_the_class(demo):
    net, x = demo
    r = trust.fragility(Torch(net), G.Saliency(), x, epsilon=0.03, n_perturbations=4, clip=(0.0, 1.0))
    assert r.attack == "random" and r.n_tried == 4 and 1 <= r.n_kept <= 4 and len(r.history) == r.n_kept
    assert np.abs(r.perturbation).max() <= 0.03 + 1e-6
    moved = np.clip(x + r.perturbation, 0, 1)
    assert moved.min() >= 0 and moved.max() <= 1
    assert np.argmax(forward(net, moved)) == np.argmax(forward(net, x))
    assert 0 <= r.topk_intersection < 1 and -1 <= r.spearman < 1 and r.k == round(0.05 * 64 * 64)
    tiny = trust.fragility(Torch(net), G.Saliency(), x, epsilon=1e-7, n_perturbations=2)
    assert tiny.topk_intersection == 1.0 and tiny.spearman > 0.999


def test_a_linear_models_gradient_cannot_be_moved(rng):
    """The gradient of a linear model is its weights: no perturbation, random or adversarial, changes it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3)).eval()
    x = rng.random((3, 6, 6), dtype=np.float32)
    for attack in trust.ATTACKS:
        r = trust.fragility(Torch(net), G.Saliency(), x, epsilon=0.1, attack=attack, n_perturbations=3, n_steps=3,
                            top_k=10)
        assert r.topk_intersection == 1.0 and r.spearman == pytest.approx(1.0)
    moved = trust.fragility(Torch(net), G.InputXGradient(), x, epsilon=0.1, n_perturbations=3, top_k=10)
    assert moved.topk_intersection < 1.0              # gradient x input moves with the input


def test_the_iterative_attack_beats_random_perturbations(demo):
    """Ghorbani et al.'s finding, on the demo CNN: a targeted attack moves the map more than random noise of the
    same size (measured: Grad-CAM top-5% intersection 0.94 under random signs, 0.0 under the attack)."""
    net, x = demo
    for explainer in (G.GradCAM(), G.SmoothGrad(G.Saliency(), n_samples=4, random_state=0)):
        rand = trust.fragility(Torch(net), explainer, x, epsilon=8 / 255, n_perturbations=4)
        attack = trust.fragility(Torch(net), explainer, x, epsilon=8 / 255, attack="iterative", n_steps=4)
        assert attack.n_kept >= 1 and np.abs(attack.perturbation).max() <= 8 / 255 + 1e-6
        assert attack.topk_intersection < rand.topk_intersection
        assert attack.history[-1] < attack.history[0] or attack.topk_intersection == 0.0


def test_fragility_of_a_black_box_method_and_its_limits(demo):
    net, x = demo
    occlusion = perturbx.Occlusion(window=(8, 8), stride=(8, 8))
    r = trust.fragility(Torch(net), occlusion, x, n_perturbations=2)
    assert r.n_kept == 2 and 0 < r.topk_intersection <= 1
    with pytest.raises(TypeError, match="attack='iterative' differentiates the map itself"):
        trust.fragility(Torch(net), occlusion, x, attack="iterative")
    with pytest.raises(TypeError, match="attack='iterative' differentiates the map itself"):
        trust.fragility(Torch(net), G.GuidedBackprop(), x, attack="iterative")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"attack": "pgd"}, ValueError, r"The 'attack' argument of fragility must be one of \('random', 'iterative'\)"),
    ({"epsilon": 0.0}, ValueError, "The 'epsilon' argument of fragility must be a finite number > 0"),
    ({"top_k": 1.5}, ValueError, r"The 'top_k' argument of fragility as a fraction must be in \(0, 1\)"),
    ({"top_k": 0}, ValueError, r"The 'top_k' argument of fragility must be in \[1, 4096\] pixels"),
    ({"top_k": "5%"}, TypeError, "The 'top_k' argument of fragility must be an int"),
    ({"n_perturbations": 0}, ValueError, "The 'n_perturbations' parameter of fragility"),
    ({"attack": "iterative", "step_size": -1.0}, ValueError, "The 'step_size' argument of fragility"),
])
def test_fragility_errors(demo, kwargs, error, match):
    net, x = demo
    with pytest.raises(error, match=match):
        trust.fragility(Torch(net), G.Saliency(), x, **kwargs)


# --- class sensitivity ----------------------------------------------------------------------------

def test_guided_backprop_is_not_class_specific_and_gradcam_is(demo):
    net, x = demo
    guided = trust.class_sensitivity(Torch(net), G.GuidedBackprop(), x)
    gradcam = trust.class_sensitivity(Torch(net), G.GradCAM(), x)
    scores = forward(net, x)
    assert (guided.top_class, guided.bottom_class) == (int(np.argmax(scores)), int(np.argmin(scores)))
    assert guided.correlation > 0.5 > gradcam.correlation            # measured 0.61 and -0.57
    assert guided.maps.shape == (2, 64, 64)


class SameMap:
    """An explainer whose map ignores the target (as attention rollout's does)."""

    def explain(self, model, x, target=None):
        return np.add.outer(np.arange(x.shape[1]), np.arange(x.shape[2])).astype(float)


class ZeroForOthers:
    """An explainer whose map is all zeros for every class but the top one."""

    def explain(self, model, x, target=None):
        top = int(np.argmax(model.predict(x[None])[0]))
        return np.arange(x.shape[1] * x.shape[2], dtype=float).reshape(x.shape[1:]) * (target == top)


def test_class_sensitivity_of_class_agnostic_and_constant_maps(demo):
    net, x = demo
    assert trust.class_sensitivity(Torch(net), SameMap(), x).correlation == 1.0
    assert trust.class_sensitivity(Torch(net), ZeroForOthers(), x).correlation == 0.0


def test_class_sensitivity_needs_two_classes(rng):
    one = Callable(lambda b: b.reshape(len(b), -1).sum(1, keepdims=True))
    with pytest.raises(ValueError, match="must return class scores with at least two classes"):
        trust.class_sensitivity(one, SameMap(), rng.random((3, 4, 4)))


# --- specs for compare ----------------------------------------------------------------------------

def case_of(adapter, x, explainer):
    e = explainer.explain(adapter, x)
    return Case(adapter, x, e, explainer, int(e.targets[0]))


def test_specs_fill_their_columns(demo):
    net, x = demo
    specs = [trust.InputInvariance(), trust.Fragility(n_perturbations=2, n_steps=2), trust.ClassSensitivity()]
    row = {}
    for spec in specs:
        row.update(spec(case_of(Torch(net), x, G.GradCAM())))
    assert set(row) == set(trust.DIRECTIONS)
    assert row["input_invariance"] == 1.0 and row["input_invariance_error"] < 1e-4
    assert all(np.isfinite(v) for v in row.values())
    assert all(c in trust.DIRECTIONS for spec in specs for c in spec.columns)
    assert all(spec.guide and spec.group in ("robustness", "randomisation") for spec in trust.TRUST_SPECS)


def test_specs_give_nan_where_a_test_does_not_apply(demo):
    net, x = demo
    probs = Callable(lambda b: forward(net, b[0])[None] if len(b) == 1 else np.stack([forward(net, i) for i in b]))
    occlusion = perturbx.Occlusion(window=(16, 16), stride=(16, 16))
    assert np.isnan(trust.InputInvariance()(case_of(probs, x, occlusion))["input_invariance"])
    out = trust.Fragility(n_perturbations=1)(case_of(Torch(net), x, occlusion))
    assert np.isfinite(out["fragility_topk"]) and np.isnan(out["fragility_topk_attack"])
