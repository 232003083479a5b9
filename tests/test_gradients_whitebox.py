"""The white-box methods of issue 17 behind the shared interface, and their defining properties.

Shared behaviour (hooks removed, model untouched, targets batched, batch sizes, query
counts, any differentiable target), then what each method must satisfy exactly:
DeepLIFT's completeness and its linear case, GradientSHAP's value from its own draws,
conductance's sums, CAM's structure check, and the errors of bad input.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from perturbx.adapters import Torch

torch = pytest.importorskip("torch")
G = pytest.importorskip("perturbx.gradients")
from torch import nn  # noqa: E402

from perturbx.targets import Function, Output, Similarity  # noqa: E402

SHAPE = (3, 20, 23)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def refs(n=3, shape=SHAPE, seed=5):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def methods():
    """One configured instance of every new method that runs on any CNN (small settings), by name."""
    return {
        "deeplift": G.DeepLIFT(baseline=0.1),
        "deeplift_rescale_pool": G.DeepLIFT(maxpool="rescale"),
        "deepliftshap": G.DeepLIFTSHAP(refs()),
        "deepliftshap_specs": G.DeepLIFTSHAP((0.0, "blur", "noise"), random_state=1),
        "gradientshap": G.GradientSHAP(refs(), n_samples=4, noise=0.1, random_state=3),
        "expected_gradients": G.ExpectedGradients(refs(), n_samples=3, random_state=0),
        "lrp": G.LRP(),
        "lrp_alpha_beta": G.LRP("epsilon_alpha2_beta1", bias=False),
        "layer_gxa": G.LayerGradientXActivation(),
        "layer_conductance": G.LayerConductance(n_steps=4),
        "neuron_conductance": G.NeuronConductance("2", (1, 3, 4), n_steps=3),
        "smooth_deeplift": G.SmoothGrad(G.DeepLIFT(), n_samples=3, random_state=2),
    }


METHOD_NAMES = list(methods())


@pytest.fixture
def x(rng):
    return rng.random(SHAPE, dtype=np.float32)


def hook_count(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


class RaiseOnCall(nn.Identity):
    """Raises on its ``n``-th forward pass (an identity for LRP and DeepLIFT)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("model failed on purpose")
        return x


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("fail_at", [2, 3])   # in the first gradient batch, or in the next after a backward pass
def test_hooks_removed_when_the_model_raises(name, fail_at, rng):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), RaiseOnCall(fail_at),
                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = rng.random(SHAPE, dtype=np.float32)
    explainer = methods()[name]
    if name == "neuron_conductance":
        explainer = G.NeuronConductance("2", (1, 3, 4), n_steps=3)
    with pytest.raises(RuntimeError, match="model failed on purpose"):
        explainer.explain(Torch(net, batch_size=1), x, target=[0, 1])
    assert hook_count(net) == 0
    assert all("forward" not in m.__dict__ for m in net.modules())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_model_and_autograd_state_untouched(name, small_cnn, x):
    net = copy.deepcopy(small_cnn)
    net[0].weight.requires_grad_(False)
    before = {k: (p.detach().clone(), p.requires_grad) for k, p in net.named_parameters()}
    with torch.no_grad():
        e = methods()[name].explain(Torch(net), x, target=[1, 2])
        assert not torch.is_grad_enabled()
    assert np.abs(e.attributions).max() > 0 and np.isfinite(e.attributions).all()
    assert hook_count(net) == 0 and not net.training
    for k, p in net.named_parameters():
        assert torch.equal(p.detach(), before[k][0]) and p.requires_grad == before[k][1] and p.grad is None, k


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_multi_target_equals_one_by_one(name, small_cnn, x):
    explainer = methods()[name]
    multi = explainer.explain(Torch(small_cnn, batch_size=4), x, target=[3, 0, 3])
    assert multi.attributions.shape == (3, *SHAPE[1:])
    for i, t in enumerate([3, 0, 3]):
        one = explainer.explain(Torch(small_cnn, batch_size=4), x, target=t)
        np.testing.assert_allclose(multi.raw[i], one.raw[0], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(multi.attributions[i], one.attributions, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_batch_size_does_not_change_results(name, small_cnn, x):
    explainer = methods()[name]
    batched = explainer.explain(Torch(small_cnn, batch_size=64), x, target=[1, 4])
    small = explainer.explain(Torch(small_cnn, batch_size=2), x, target=[1, 4])
    np.testing.assert_allclose(batched.raw, small.raw, rtol=1e-4, atol=1e-8)


class CountingModule(nn.Module):
    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x):
        self.rows += len(x)
        return self.inner(x)


@pytest.mark.parametrize(("name", "per_target", "fixed"), [   # fixed: f(x) and what a method asks once
    ("deeplift", 2, 2), ("deepliftshap", 2 * 3, 1 + 3), ("gradientshap", 4, 1 + 3), ("expected_gradients", 3, 1 + 3),
    ("lrp", 1, 1), ("layer_gxa", 1, 1), ("layer_conductance", 5, 2), ("neuron_conductance", 3, 1),
    ("smooth_deeplift", 3 * 2, 1),
])
def test_queries_are_counted(name, per_target, fixed, small_cnn, x):
    counting = CountingModule(small_cnn)
    adapter = Torch(counting, batch_size=5)
    explainer = methods()[name]
    if name == "neuron_conductance":                      # the layer's name inside the counting wrapper
        explainer = G.NeuronConductance("inner.2", (1, 3, 4), n_steps=3)
    e = explainer.explain(adapter, x, target=[0, 1, 2])
    assert e.n_queries == 3 * per_target + fixed
    assert adapter.n_queries == counting.rows == e.n_queries


@pytest.mark.parametrize("name", ["deeplift", "gradientshap", "lrp", "layer_conductance", "neuron_conductance"])
def test_any_differentiable_target(name, small_cnn, x):
    """Output and Similarity targets work; an Output of one logit equals that class; a non-differentiable one is
    refused before any query."""
    explainer = methods()[name]
    as_class = explainer.explain(Torch(small_cnn), x, target=2)
    as_output = explainer.explain(Torch(small_cnn), x, target=Output(2))
    np.testing.assert_allclose(as_output.raw, as_class.raw, rtol=1e-6, atol=1e-9)
    ref = np.random.default_rng(0).normal(size=5)
    sim = explainer.explain(Torch(small_cnn), x, target=Similarity(ref))
    assert sim.attributions.shape == SHAPE[1:] and np.abs(sim.attributions).max() > 0
    adapter = Torch(small_cnn)
    with pytest.raises(TypeError, match="differentiates the target"):
        explainer.explain(adapter, x, target=Function(lambda out: out[:, :1]))
    assert adapter.n_queries == 0


# --- DeepLIFT -------------------------------------------------------------------------------------

def test_deeplift_on_a_linear_model_is_difference_times_weight(rng):
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, b = rng.random((3, 2, 2), dtype=np.float32), rng.random((3, 2, 2), dtype=np.float32)
    e = G.DeepLIFT(b).explain(Torch(net), x, target=[0, 2])
    w = net[1].weight.detach().numpy().reshape(3, 3, 2, 2)
    np.testing.assert_allclose(e.raw, (x - b)[None] * w[[0, 2]], rtol=1e-6)


def _pool_net():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


def test_deeplift_is_complete_with_module_nonlinearities(rng):
    """ReLU modules and max pooling with the rescale rule (non-overlapping windows): sum = f(x) - f(r) exactly."""
    net, x = _pool_net(), rng.random((3, 8, 8), dtype=np.float32)
    e = G.DeepLIFT(rng.random((3, 8, 8), dtype=np.float32), maxpool="rescale").explain(Torch(net), x, target=[0, 3])
    np.testing.assert_allclose(e.completeness_gap, 0.0, atol=1e-5 * np.abs(e.score_difference).max())
    gradient_rule = G.DeepLIFT(e.baseline).explain(Torch(net), x, target=[0, 3])
    assert np.abs(gradient_rule.completeness_gap).max() > 1e-3 * np.abs(e.score_difference).max()


def test_deeplift_shap_is_complete_against_the_mean_reference(rng):
    net, x = _pool_net(), rng.random((3, 8, 8), dtype=np.float32)
    refs_ = rng.random((4, 3, 8, 8), dtype=np.float32)
    e = G.DeepLIFTSHAP(refs_, maxpool="rescale").explain(Torch(net), x, target=1)
    with torch.no_grad():
        f = net(torch.as_tensor(np.concatenate([x[None], refs_])))[:, 1].double().numpy()
    np.testing.assert_allclose(e.attributions.sum(), f[0] - f[1:].mean(), rtol=1e-5)


def test_a_functional_relu_keeps_its_gradient(rng):
    """What DeepLIFT cannot see keeps its gradient (as in Captum); completeness then fails, and the gap says so."""

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    torch.manual_seed(1)
    net, x = Functional().eval(), rng.random((3, 8, 8), dtype=np.float32)
    e = G.DeepLIFT(1.0).explain(Torch(net), x, target=0)
    grad = G.Saliency(abs=False).explain(Torch(net), x, target=0)
    np.testing.assert_allclose(e.raw[0], (x - 1.0) * grad.raw[0], rtol=1e-5, atol=1e-8)
    assert abs(e.completeness_gap[0]) > 1e-3


# --- GradientSHAP, expected gradients ---------------------------------------------------------------

def test_gradient_shap_on_a_linear_model_from_its_own_draws(rng):
    """For f = w.x the gradient is w everywhere: attributions = w * mean_k (x + e_k - r_k), the draws in extras."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval()
    x, refs_ = rng.random((3, 2, 2), dtype=np.float32), rng.random((5, 3, 2, 2), dtype=np.float32)
    e = G.GradientSHAP(refs_, n_samples=7, noise=0.2, random_state=4).explain(Torch(net), x, target=1)
    _, _, noise = G.gradient_shap.draw(np.random.default_rng(4), 5, 7, x.shape, e.sigma)
    w = net[1].weight.detach().numpy()[1].reshape(3, 2, 2)
    expected = w * (x + noise - refs_[e.baseline_index]).mean(0)
    np.testing.assert_allclose(e.raw[0], expected, rtol=1e-5, atol=1e-7)


def test_expected_gradients_estimates_integrated_gradients(small_cnn, x):
    """With one reference, expected gradients is integrated gradients with random path points."""
    b = np.full(SHAPE, 0.3, dtype=np.float32)
    eg = G.ExpectedGradients(b[None], n_samples=1500, random_state=0).explain(Torch(small_cnn), x, target=1)
    ig = G.IntegratedGradients(n_steps=64, baseline=0.3).explain(Torch(small_cnn), x, target=1)
    assert np.corrcoef(eg.raw.ravel(), ig.raw.ravel())[0, 1] > 0.99


# --- conductance ----------------------------------------------------------------------------------

def test_layer_conductance_completeness_improves_with_steps(small_cnn, x):
    gaps = [abs(G.LayerConductance("1", n_steps=n).explain(Torch(small_cnn), x, target=2).completeness_gap[0])
            for n in (2, 8, 64)]
    assert gaps[2] < gaps[1] < gaps[0] and gaps[2] < gaps[0] / 10


def test_neuron_conductance_sums_to_the_units_conductance(small_cnn, x):
    unit = (2, 4, 5)
    layer = G.LayerConductance("2", n_steps=200).explain(Torch(small_cnn), x, target=3)
    neuron = G.NeuronConductance("2", unit, n_steps=200).explain(Torch(small_cnn), x, target=3)
    np.testing.assert_allclose(neuron.raw.sum(), layer.raw[0][unit], rtol=2e-2)


def test_channel_scores_rank_the_feature_maps(small_cnn, x):
    e = G.LayerGradientXActivation("0").explain(Torch(small_cnn), x, target=[0, 4])
    np.testing.assert_allclose(e.channel_scores, e.raw.sum(axis=(2, 3)), rtol=1e-12)
    for t in range(2):
        assert np.all(np.diff(e.channel_scores[t][e.channel_ranking[t]]) <= 0)
    np.testing.assert_allclose(e.attributions, e.raw.sum(1), rtol=1e-5, atol=1e-9)   # layer "0" keeps (H, W)


# --- CAM ------------------------------------------------------------------------------------------

def gap_net():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


def test_cam_by_hand(x):
    net = gap_net()
    e = G.CAM().explain(Torch(net), x, target=[1, 3])
    with torch.no_grad():
        feats = net[:4](torch.as_tensor(x)[None])[0]
    expected = torch.einsum("tc,chw->thw", net[6].weight.detach()[[1, 3]], feats).double().numpy()
    np.testing.assert_allclose(e.raw, expected, rtol=1e-5, atol=1e-7)
    relu = G.CAM(relu=True).explain(Torch(net), x, target=[1, 3])
    np.testing.assert_allclose(relu.raw, np.maximum(expected, 0), rtol=1e-5, atol=1e-7)
    assert e.layer == "4" and e.linear == "6" and e.attributions.shape == (2, *SHAPE[1:])


def test_cam_refuses_networks_without_gap_and_linear(small_cnn, x):
    with pytest.raises(ValueError, match=r"The 'model' argument of CAM .* pools to \(8, 2, 2\) before its linear"):
        G.CAM().explain(Torch(small_cnn), x)
    max_head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="has no average-pooling module right before its last linear layer"):
        G.CAM().explain(Torch(max_head), x)
    scaled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2), nn.Tanh())
    with pytest.raises(ValueError, match="does not end in an nn.Linear module whose output is the model's output"):
        G.CAM().explain(Torch(scaled), x)
    with pytest.raises(TypeError, match="CAM .* explains class targets only"):
        G.CAM().explain(Torch(gap_net()), x, target=Output(1))


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("factory", "error", "match"), [
    (lambda: G.DeepLIFT(baseline="zero"), ValueError, "The 'baseline' parameter of DeepLIFT"),
    (lambda: G.DeepLIFT(eps=-1.0), ValueError, "The 'eps' parameter of DeepLIFT"),
    (lambda: G.DeepLIFT(maxpool="max"), ValueError, "The 'maxpool' parameter of DeepLIFT must be one of"),
    (lambda: G.DeepLIFTSHAP(baselines=0.0), TypeError, "The 'baselines' parameter of DeepLIFTSHAP must be an array"),
    (lambda: G.DeepLIFTSHAP(baselines=np.zeros(3)), ValueError, r"must be a numeric array \(B, \*sample_shape\)"),
    (lambda: G.DeepLIFTSHAP(baselines=("gray",)), ValueError, "The 'baseline' parameter of DeepLIFTSHAP"),
    (lambda: G.GradientSHAP(n_samples=0), ValueError, "The 'n_samples' parameter of GradientSHAP"),
    (lambda: G.GradientSHAP(noise=-0.1), ValueError, "The 'noise' parameter of GradientSHAP"),
    (lambda: G.ExpectedGradients(n_samples=2.5), ValueError, "The 'n_samples' parameter of ExpectedGradients"),
    (lambda: G.LayerConductance(layer=3), TypeError, "The 'layer' parameter of LayerConductance must be a module"),
    (lambda: G.LayerConductance(method="trapezoid"), ValueError, "The 'method' parameter of LayerConductance"),
    (lambda: G.NeuronConductance(None, 0), TypeError, "The 'layer' parameter of NeuronConductance"),
    (lambda: G.NeuronConductance("2", (1, -1)), TypeError, "The 'neuron' parameter of NeuronConductance"),
    (lambda: G.LayerGradientXActivation(upsample="area"), ValueError, "The 'upsample' parameter"),
    (lambda: G.CAM(relu=1), TypeError, "The 'relu' parameter of CAM must be True or False"),
])
def test_constructor_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_layer_errors(small_cnn, x):
    with pytest.raises(ValueError, match="The 'layer' parameter of LayerConductance names no submodule of "
                                         "Sequential: got 'conv9'"):
        G.LayerConductance("conv9").explain(Torch(small_cnn), x)
    with pytest.raises(ValueError, match="The 'layer' parameter of NeuronConductance names no submodule"):
        G.NeuronConductance("conv9", 0).explain(Torch(small_cnn), x)
    with pytest.raises(ValueError, match=r"The 'neuron' parameter of NeuronConductance is \(9, 0, 0\), but layer "
                                         r"'2' returns units of shape \(8, 10, 12\)"):
        G.NeuronConductance("2", (9, 0, 0)).explain(Torch(small_cnn), x)
    with pytest.raises(ValueError, match=r"holds samples of shape \(3, 4, 4\) but the sample has shape"):
        G.DeepLIFTSHAP(refs(2, (3, 4, 4))).explain(Torch(small_cnn), x)


def test_deeplift_needs_the_batch_axis_kept(x):
    class Folds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu, self.fc = nn.ReLU(), nn.Linear(3 * 20 * 23, 2)

        def forward(self, z):
            z = self.relu(z.reshape(1, -1)) if len(z) == 1 else self.relu(z.reshape(1, len(z), -1))[0]
            return self.fc(z.reshape(-1, 3 * 20 * 23))

    with pytest.raises(ValueError, match="DeepLIFT pairs each input row with its reference, but ReLU received 1"):
        G.DeepLIFT().explain(Torch(Folds()), x)
