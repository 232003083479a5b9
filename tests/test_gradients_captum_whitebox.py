"""DeepLIFT, DeepLIFT-SHAP, GradientSHAP, conductance and layer attributions against Captum, and CAM against Grad-CAM.

Same model (eval mode), input, targets and settings on both sides, on the demo CNN and the
ResNet-18-shaped CNN. Each target of a multi-target explanation is compared with Captum
run for that target alone. Values must agree within 1e-5 (absolute, scaled by the largest
value of the reference when that is below 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from perturbx.adapters import Torch

torch = pytest.importorskip("torch")
ca = pytest.importorskip("captum.attr")
G = pytest.importorskip("perturbx.gradients")
models = pytest.importorskip("perturbx.models")

from .test_gradients_captum import captum, close  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["demo_cnn", "resnet18_shaped"])
def case(request):
    """(model in eval mode, input sample, its two highest classes, a conv-shaped layer name)."""
    x = np.random.default_rng(7).random((3, 64, 64), dtype=np.float32)
    if request.param == "demo_cnn":
        from perturbx.datasets import make_shapes

        x = make_shapes(1, random_state=models.DEMO_TEST_SEED).images[0]
        net, layer = models.load_demo_model().eval(), "features.9"
    else:
        net, layer = models.resnet18_shaped(n_classes=10, random_state=0).eval(), "layer3"
    with torch.no_grad():
        logits = net(torch.as_tensor(x)[None])[0].numpy()
    return net, x, [int(t) for t in np.argsort(-logits)[:2]], layer


def xt(x):
    return torch.as_tensor(x)[None]


def references(x, n=3, seed=3):
    return np.random.default_rng(seed).random((n, *x.shape), dtype=np.float32)


# --- DeepLIFT -------------------------------------------------------------------------------------

@pytest.mark.parametrize("baseline", [0.0, "array"])
def test_deeplift(case, baseline):
    net, x, targets, _ = case
    b = references(x, 1)[0] if baseline == "array" else baseline
    e = G.DeepLIFT(b).explain(Torch(net), x, target=targets)
    for i, t in enumerate(targets):
        ref, delta = captum(lambda t=t: ca.DeepLift(net).attribute(
            xt(x), baselines=xt(b) if isinstance(b, np.ndarray) else b, target=t, return_convergence_delta=True))
        close(e.raw[i], ref[0])
        np.testing.assert_allclose(e.completeness_gap[i], float(delta), atol=1e-4)
    assert e.n_queries == 1 + 2 * len(targets) + 1     # f(x), (input, reference) per target, f(reference)


def test_deeplift_shap(case):
    net, x, targets, _ = case
    refs = references(x, 4)
    e = G.DeepLIFTSHAP(refs).explain(Torch(net, batch_size=5), x, target=targets)
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.DeepLiftShap(net).attribute(xt(x), baselines=torch.as_tensor(refs), target=t))
        close(e.raw[i], ref[0])
    np.testing.assert_array_equal(e.baselines, refs)
    assert e.n_queries == 1 + 2 * 4 * len(targets) + 4


# --- GradientSHAP with Captum drawing our draws -------------------------------------------------------

@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_gradient_shap_with_the_same_draws(case, noise, monkeypatch):
    """Captum draws from numpy's and torch's global generators; handed our draws, it must give our values."""
    net, x, targets, _ = case
    refs = references(x, 4)
    e = G.GradientSHAP(refs, n_samples=6, noise=noise, random_state=5).explain(Torch(net, batch_size=4), x,
                                                                              target=targets)
    index, alpha, noise_draw = G.gradient_shap.draw(np.random.default_rng(5), 4, 6, x.shape, e.sigma)
    np.testing.assert_array_equal(e.baseline_index, index)
    np.testing.assert_array_equal(e.alpha, alpha)
    monkeypatch.setattr(np.random, "choice", lambda n, size: index.copy())
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: alpha.copy())
    monkeypatch.setattr(torch, "normal", lambda mean, std: torch.as_tensor(noise_draw))
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.GradientShap(net).attribute(xt(x), baselines=torch.as_tensor(refs), n_samples=6,
                                                                 stdevs=e.sigma, target=t))
        close(e.raw[i], ref[0])
    assert e.n_queries == 1 + 6 * len(targets) + 4


def test_expected_gradients_is_gradient_shap_without_noise(case):
    net, x, targets, _ = case
    refs = references(x, 3)
    a = G.ExpectedGradients(refs, n_samples=5, random_state=2).explain(Torch(net), x, target=targets)
    b = G.GradientSHAP(refs, n_samples=5, noise=0.0, random_state=2).explain(Torch(net), x, target=targets)
    np.testing.assert_array_equal(a.raw, b.raw)
    assert a.sigma == 0.0


# --- conductance and layer attributions ------------------------------------------------------------

@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_layer_conductance(case, method):
    net, x, targets, layer = case
    e = G.LayerConductance(layer, n_steps=6, method=method, internal_batch_size=4).explain(Torch(net), x,
                                                                                        target=targets)
    module = dict(net.named_modules())[layer]
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.LayerConductance(net, module).attribute(xt(x), target=t, n_steps=6,
                                                                            method=method))
        close(e.raw[i], ref[0])
        np.testing.assert_allclose(e.channel_scores[i], ref[0].detach().sum(dim=(1, 2)).double().numpy(), atol=1e-5)
    assert e.layer == layer and e.n_queries == 1 + 7 * len(targets) + 1


def test_layer_gradient_x_activation(case):
    net, x, targets, layer = case
    e = G.LayerGradientXActivation(layer).explain(Torch(net), x, target=targets)
    module = dict(net.named_modules())[layer]
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.LayerGradientXActivation(net, module).attribute(xt(x), target=t))
        close(e.raw[i], ref[0])
        order = np.argsort(-ref[0].detach().sum(dim=(1, 2)).double().numpy(), kind="stable")
        np.testing.assert_array_equal(e.channel_ranking[i][:3], order[:3])


def _a_live_neuron(net, x, layer, target):
    """The unit of ``layer`` with the largest |unit * d f_t / d unit| (active, and the target depends on it)."""
    acts = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        out = net(xt(x))
        (g,) = torch.autograd.grad(out[0, target], acts["a"])
    finally:
        handle.remove()
    score = (g[0] * acts["a"][0]).abs()
    return tuple(int(i) for i in np.unravel_index(int(score.argmax()), g.shape[1:]))


@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_neuron_conductance(case, method):
    net, x, targets, layer = case
    neuron = _a_live_neuron(net, x, layer, targets[0])
    e = G.NeuronConductance(layer, neuron, n_steps=5, method=method, internal_batch_size=3).explain(
        Torch(net), x, target=targets)
    module = dict(net.named_modules())[layer]
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.NeuronConductance(net, module).attribute(
            xt(x), neuron_selector=neuron, target=t, n_steps=5, method=method))
        close(e.raw[i], ref[0], allow_zero=i > 0)
    assert e.neuron == neuron and e.n_queries == 1 + 5 * len(targets)


def test_neuron_conductance_of_a_linear_unit():
    """Units of a 2-D layer output: the logit itself (its conductance is the whole IG of that class)."""
    net = models.resnet18_shaped(n_classes=10, random_state=0).eval()
    x = np.random.default_rng(7).random((3, 64, 64), dtype=np.float32)
    e = G.NeuronConductance("fc", (3,), n_steps=5).explain(Torch(net), x, target=[3, 4])
    ref = captum(lambda: ca.NeuronConductance(net, net.fc).attribute(xt(x), neuron_selector=(3,), target=3,
                                                                      n_steps=5))
    close(e.raw[0], ref[0])
    ig = G.IntegratedGradients(n_steps=5, method="riemann_trapezoid").explain(Torch(net), x, target=3)
    close(e.raw[0], ig.raw[0])
    np.testing.assert_array_equal(e.raw[1], 0.0)       # class 4 does not depend on logit 3


# --- CAM ------------------------------------------------------------------------------------------

def test_cam_is_gradcam_without_relu_up_to_a_positive_scale():
    """For GAP + linear, Grad-CAM's weights are w_tc / (h w): CAM = h w * Grad-CAM (no ReLU), on the last block."""
    net = models.resnet18_shaped(n_classes=10, random_state=0).eval()
    x = np.random.default_rng(7).random((3, 96, 96), dtype=np.float32)
    cam = G.CAM().explain(Torch(net), x, target=[3, 9, 0])
    grad = G.GradCAM("layer4", relu=False).explain(Torch(net), x, target=[3, 9, 0])
    assert cam.layer == "avgpool" and cam.linear == "fc" and cam.raw.shape == grad.raw.shape == (3, 3, 3)
    close(cam.raw, grad.raw * 9)
    close(cam.attributions, grad.attributions * 9)
    with torch.no_grad():
        feats = {}
        handle = net.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
        net(xt(x))
        handle.remove()
    by_hand = torch.einsum("tc,chw->thw", net.fc.weight[[3, 9, 0]], feats["a"][0])
    close(cam.raw, by_hand)
    assert cam.n_queries == 2                      # the reference query and the forward pass that reads the maps
