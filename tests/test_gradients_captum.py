"""Every gradient method against its Captum counterpart, on the demo CNN and the ResNet-shaped CNN.

Same model (eval mode), input, targets and settings on both sides. Each target of a
multi-target explanation is compared with Captum run for that target alone, so these
tests also check that targets batched into one backward pass equal one-by-one runs.
Values must agree within 1e-5 (absolute, and relative to the largest value of the map).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from perturbx.adapters import Torch

torch = pytest.importorskip("torch")
ca = pytest.importorskip("captum.attr")
G = pytest.importorskip("perturbx.gradients")
models = pytest.importorskip("perturbx.models")
TorchFunctionMode = torch.overrides.TorchFunctionMode


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small models: one intra-op thread is as fast, and does not stall on a busy machine (module-scoped
    fixtures, such as training the demo CNN when it is not cached yet, still run with the default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["demo_cnn", "resnet18_shaped"])
def case(request):
    """(model in eval mode, input sample, targets: its two highest classes, a layer name for Grad-CAM)."""
    x = np.random.default_rng(7).random((3, 64, 64), dtype=np.float32)
    if request.param == "demo_cnn":
        from perturbx.datasets import make_shapes

        x = make_shapes(1, random_state=models.DEMO_TEST_SEED).images[0]  # an input the trained model knows
        net = models.load_demo_model().eval()
        name = demo_layer_name(net)
    else:
        net = models.resnet18_shaped(n_classes=10, random_state=0).eval()
        name = "layer4"
    with torch.no_grad():
        logits = net(torch.as_tensor(x)[None])[0].numpy()
    return net, x, [int(t) for t in np.argsort(-logits)[:2]], name


def demo_layer_name(net) -> str:
    """Some non-final conv-shaped layer of the demo CNN to explain by name."""
    convs = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-2] if len(convs) > 1 else convs[-1]


def layer_of(net, name):
    return dict(net.named_modules())[name]


def last_conv(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]


def close(ours, ref, rel: float = 1e-5, *, allow_zero: bool = False) -> None:
    """``|ours - ref| <= rel * min(1, max|ref|)`` everywhere, and ``ref`` is not all zeros
    (unless ``allow_zero``: a ReLU'd Grad-CAM of a class the input argues against is all zeros)."""
    ref = np.asarray(ref.detach().to(torch.float64) if isinstance(ref, torch.Tensor) else ref)
    scale = float(np.abs(ref).max())
    if allow_zero and scale == 0:
        np.testing.assert_array_equal(ours, 0.0)
        return
    assert scale > 0, "the reference is all zeros: the comparison would prove nothing"
    np.testing.assert_allclose(ours, ref, rtol=0, atol=rel * min(1.0, scale))


def captum(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Captum warns about its ReLU hooks on every call
        return fn()


class CountRelus(TorchFunctionMode):
    """Counts every relu the forward pass applies, whether through a module or a function."""

    FUNCS = (torch.relu, torch.relu_, torch.nn.functional.relu, torch.Tensor.relu, torch.Tensor.relu_)

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.n += func in self.FUNCS
        return func(*args, **(kwargs or {}))


def test_every_relu_is_a_module(case):
    """Guided backprop and deconvnet rewrite nn.ReLU modules (as Captum does): every relu must be one."""
    net, x = case[0], case[1]
    module_calls = []
    handles = [m.register_forward_hook(lambda *a: module_calls.append(1))
               for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        with torch.no_grad(), CountRelus() as counter:
            net(torch.as_tensor(x)[None])
    finally:
        for h in handles:
            h.remove()
    assert counter.n == len(module_calls) > 0


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency(case, abs_):
    net, x, targets, _ = case
    e = G.Saliency(abs=abs_).explain(Torch(net), x, target=targets)
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.Saliency(net).attribute(torch.as_tensor(x)[None], target=t, abs=abs_))[0]
        close(e.raw[i], ref)
        close(e.attributions[i], ref.sum(0))


def test_input_x_gradient(case):
    net, x, targets, _ = case
    e = G.InputXGradient().explain(Torch(net), x, target=targets)
    for i, t in enumerate(targets):
        close(e.raw[i], captum(lambda t=t: ca.InputXGradient(net).attribute(torch.as_tensor(x)[None], target=t))[0])


@pytest.mark.parametrize(("method", "n_steps", "baseline"), [("riemann_trapezoid", 8, 0.0),
                                                             ("gausslegendre", 5, "array")])
def test_integrated_gradients(case, method, n_steps, baseline):
    net, x, targets, _ = case
    if baseline == "array":
        baseline = np.random.default_rng(1).random(x.shape, dtype=np.float32)
    e = G.IntegratedGradients(n_steps=n_steps, method=method, baseline=baseline,
                              internal_batch_size=3).explain(Torch(net), x, target=targets)
    b = torch.as_tensor(baseline)[None] if isinstance(baseline, np.ndarray) else baseline
    for i, t in enumerate(targets):
        ref, delta = captum(lambda t=t: ca.IntegratedGradients(net).attribute(
            torch.as_tensor(x)[None], baselines=b, target=t, n_steps=n_steps, method=method,
            return_convergence_delta=True))
        close(e.raw[i], ref[0])
        np.testing.assert_allclose(e.completeness_gap[i], float(delta), atol=1e-5)


@pytest.mark.parametrize(("base", "captum_base", "kind"), [
    (lambda: G.Saliency(), lambda net: ca.Saliency(net), "smoothgrad"),
    (lambda: G.Saliency(), lambda net: ca.Saliency(net), "smoothgrad_sq"),
    (lambda: G.Saliency(), lambda net: ca.Saliency(net), "vargrad"),
    (lambda: G.IntegratedGradients(n_steps=3), lambda net: ca.IntegratedGradients(net), "smoothgrad"),
])
def test_noise_tunnel_same_seed(case, base, captum_base, kind):
    """Same noise: Captum draws from the global generator seeded with our ``torch_seed``, one copy at a time."""
    net, x, targets, _ = case
    e = G.SmoothGrad(base(), n_samples=3, noise=0.2, kind=kind, random_state=11).explain(Torch(net), x,
                                                                                        target=targets)
    assert e.sigma == pytest.approx(0.2 * float(x.max() - x.min()))
    kwargs = {"n_steps": 3, "method": "gausslegendre"} if "Integrated" in type(captum_base(net)).__name__ else {}
    for i, t in enumerate(targets):
        torch.manual_seed(e.torch_seed)
        ref = captum(lambda t=t: ca.NoiseTunnel(captum_base(net)).attribute(
            torch.as_tensor(x)[None], nt_type=kind, nt_samples=3, nt_samples_batch_size=1, stdevs=e.sigma,
            target=t, **kwargs))
        close(e.raw[i], ref[0])


def test_noise_tunnel_over_gradcam(case):
    net, x, targets, _ = case
    e = G.SmoothGrad(G.GradCAM(relu=False), n_samples=3, kind="vargrad", random_state=2).explain(Torch(net), x,
                                                                                      target=targets)
    for i, t in enumerate(targets):
        torch.manual_seed(e.torch_seed)
        ref = captum(lambda t=t: ca.NoiseTunnel(ca.LayerGradCam(net, last_conv(net))).attribute(
            torch.as_tensor(x)[None], nt_type="vargrad", nt_samples=3, nt_samples_batch_size=1, stdevs=e.sigma,
            target=t, relu_attributions=False))
        # a variance of float32 maps: E[a^2] - E[a]^2 cancels digits, so agreement to 1e-4 of the largest value
        close(e.raw[i], ref[0, 0], rel=1e-4)
        close(e.attributions[i], ca.LayerAttribution.interpolate(ref, x.shape[1:], "nearest")[0, 0], rel=1e-4)


@pytest.mark.parametrize(("by_name", "relu", "upsample"), [(False, True, "nearest"), (True, False, "bilinear")])
def test_gradcam(case, by_name, relu, upsample):
    net, x, targets, name = case
    layer = layer_of(net, name) if by_name else last_conv(net)
    e = G.GradCAM(name if by_name else None, relu=relu, upsample=upsample).explain(Torch(net), x, target=targets)
    assert layer_of(net, e.layer) is layer
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.LayerGradCam(net, layer).attribute(torch.as_tensor(x)[None], target=t,
                                                                        relu_attributions=relu))
        zero_ok = relu and i > 0  # the top class (i == 0) must give a non-trivial map
        close(e.raw[i], ref[0, 0], allow_zero=zero_ok)
        close(e.attributions[i], ca.LayerAttribution.interpolate(ref, x.shape[1:], upsample)[0, 0],
              allow_zero=zero_ok)


@pytest.mark.parametrize(("ours", "theirs"), [(G.GuidedBackprop, ca.GuidedBackprop), (G.Deconvnet, ca.Deconvolution)])
def test_modified_relu_methods(case, ours, theirs):
    net, x, targets, _ = case
    e = ours().explain(Torch(net), x, target=targets)
    for i, t in enumerate(targets):
        close(e.raw[i], captum(lambda t=t: theirs(net).attribute(torch.as_tensor(x)[None], target=t))[0])


@pytest.mark.parametrize(("by_name", "upsample"), [(False, "nearest"), (True, "bilinear")])
def test_guided_gradcam(case, by_name, upsample):
    net, x, targets, name = case
    layer = layer_of(net, name) if by_name else last_conv(net)
    e = G.GuidedGradCAM(name if by_name else None, upsample=upsample).explain(Torch(net), x, target=targets)
    for i, t in enumerate(targets):
        ref = captum(lambda t=t: ca.GuidedGradCam(net, layer).attribute(torch.as_tensor(x)[None], target=t,
                                                                         interpolate_mode=upsample))
        close(e.raw[i], ref[0])


def test_probability_output(case):
    """``Torch(output="probs")``: gradients of the softmax, as Captum sees a softmax-wrapped model."""
    net, x, targets, _ = case
    e = G.IntegratedGradients(n_steps=3).explain(Torch(net, output="probs"), x, target=targets)
    probs = torch.nn.Sequential(net, torch.nn.Softmax(dim=1))
    for i, t in enumerate(targets):
        ref = ca.IntegratedGradients(probs).attribute(torch.as_tensor(x)[None], target=t, n_steps=3)
        close(e.raw[i], ref[0])
