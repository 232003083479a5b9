"""Gradient methods: the optional import, errors, hooks, batching, queries, reductions, hand cases.

Agreement with Captum on the demo CNN and the ResNet-shaped CNN is in test_gradients_captum.py.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from perturbx.adapters import Callable, Torch

torch = pytest.importorskip("torch")
G = pytest.importorskip("perturbx.gradients")
nn = torch.nn


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small models: one intra-op thread is as fast, and does not stall on a busy machine (module-scoped
    fixtures, such as training the demo CNN when it is not cached yet, still run with the default)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

SHAPE = (3, 20, 23)


def methods():
    """One configured instance of every method (small settings), by name."""
    return {
        "saliency": G.Saliency(),
        "signed_saliency": G.Saliency(abs=False),
        "input_x_gradient": G.InputXGradient(),
        "ig_trapezoid": G.IntegratedGradients(n_steps=8, baseline=0.2),
        "ig_gausslegendre": G.IntegratedGradients(n_steps=5, method="gausslegendre"),
        "smoothgrad": G.SmoothGrad(G.Saliency(), n_samples=4, random_state=3),
        "vargrad_ig": G.SmoothGrad(G.IntegratedGradients(n_steps=3), n_samples=3, kind="vargrad", random_state=1),
        "gradcam": G.GradCAM(),
        "gradcam_bilinear_first_layer": G.GradCAM("0", upsample="bilinear", relu=False),
        "gradcampp": G.GradCAMpp(),
        "guided_backprop": G.GuidedBackprop(),
        "deconvnet": G.Deconvnet(),
        "guided_gradcam": G.GuidedGradCAM(upsample="bilinear"),
    }


METHOD_NAMES = list(methods())


@pytest.fixture
def x(rng):
    return rng.random(SHAPE, dtype=np.float32)


def hook_count(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


# --- optional import ---------------------------------------------------------------------------

def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_import_without_torch_names_the_extra():
    res = run_python("""
        import sys
        sys.modules["torch"] = None          # makes `import torch` fail, as if it were not installed
        import perturbx                       # the core works without torch
        try:
            import perturbx.gradients
        except ImportError as exc:
            print("IMPORT-ERROR:", exc)
        """)
    assert res.returncode == 0, res.stderr
    assert "IMPORT-ERROR: perturbx.gradients needs PyTorch: pip install 'perturbx[torch]'" in res.stdout


def test_import_perturbx_does_not_import_torch():
    res = run_python("""
        import sys, perturbx
        print("torch" in sys.modules)
        """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


# --- adapters and arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["saliency", "gradcam", "ig_trapezoid"])
def test_non_torch_adapter_is_a_type_error(name, x):
    model = Callable(lambda batch: batch.reshape(len(batch), -1)[:, :4])
    with pytest.raises(TypeError, match=r"gradient methods need adapters\.Torch .*got a Callable adapter"):
        methods()[name].explain(model, x)
    with pytest.raises(TypeError, match=r"need adapters\.Torch .*got a function"):
        methods()[name].explain(lambda batch: batch, x)


def test_bare_module_is_wrapped(small_cnn, x):
    bare = G.Saliency().explain(small_cnn, x, target=1)
    wrapped = G.Saliency().explain(Torch(small_cnn), x, target=1)
    np.testing.assert_array_equal(bare.attributions, wrapped.attributions)


@pytest.mark.parametrize(("factory", "error", "match"), [
    (lambda: G.Saliency(abs=1), TypeError, "'abs' parameter of Saliency must be True or False"),
    (lambda: G.Saliency(reduction="max"), ValueError, "'reduction' parameter of Saliency must be one of"),
    (lambda: G.InputXGradient(reduction=None), ValueError, "'reduction' parameter of InputXGradient"),
    (lambda: G.IntegratedGradients(n_steps=1, method="trapezoid"), ValueError,
     "'n_steps' parameter of IntegratedGradients must be an int >= 2"),
    (lambda: G.IntegratedGradients(n_steps=0), ValueError, "'n_steps' parameter of IntegratedGradients must be an "
                                                            "int >= 1"),
    (lambda: G.IntegratedGradients(n_steps=2.0), ValueError, "'n_steps' parameter .* Got 2.0"),
    (lambda: G.IntegratedGradients(method="riemann_left"), ValueError, "'method' parameter of IntegratedGradients"),
    (lambda: G.IntegratedGradients(baseline="zeros"), ValueError, "'baseline' parameter of IntegratedGradients"),
    (lambda: G.IntegratedGradients(internal_batch_size=0), ValueError, "'internal_batch_size' parameter"),
    (lambda: G.IntegratedGradients(random_state=-1), ValueError, "'random_state' parameter of IntegratedGradients"),
    (lambda: G.SmoothGrad(object()), TypeError, "'base' parameter of SmoothGrad .* Got object"),
    (lambda: G.SmoothGrad(G.SmoothGrad(G.Saliency())), TypeError, "other than SmoothGrad"),
    (lambda: G.SmoothGrad(G.Saliency(), n_samples=0), ValueError, "'n_samples' parameter of SmoothGrad"),
    (lambda: G.SmoothGrad(G.Saliency(), noise=-0.1), ValueError, "'noise' parameter of SmoothGrad"),
    (lambda: G.SmoothGrad(G.Saliency(), kind="sq"), ValueError, "'kind' parameter of SmoothGrad must be one of"),
    (lambda: G.SmoothGrad(G.Saliency(), samples_per_batch=0), ValueError, "'samples_per_batch' parameter"),
    (lambda: G.SmoothGrad(G.Saliency(), random_state="a"), TypeError, "'random_state' parameter of SmoothGrad"),
    (lambda: G.GradCAM(layer=3), TypeError, "'layer' parameter of GradCAM must be a module name"),
    (lambda: G.GradCAMpp(relu=None), TypeError, "'relu' parameter of GradCAMpp"),
    (lambda: G.GradCAM(upsample="bicubic"), ValueError, "'upsample' parameter of GradCAM must be one of"),
    (lambda: G.GuidedGradCAM(upsample="area"), ValueError, "'upsample' parameter of GuidedGradCAM"),
    (lambda: G.GuidedGradCAM(layer=nn.Conv2d(1, 1, 1)), TypeError, "'layer' parameter of GuidedGradCAM"),
])
def test_constructor_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


class Twice(nn.Module):
    """Runs the same conv twice: no single layer output to explain."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))

    def forward(self, x):
        return self.head(self.conv(torch.relu(self.conv(x))))


def test_layer_errors(small_cnn, x):
    with pytest.raises(ValueError, match="'layer' parameter of GradCAM names no submodule of Sequential: got 'conv9'"):
        G.GradCAM("conv9").explain(Torch(small_cnn), x)
    with pytest.raises(ValueError, match=r"Layer '6' returned \(1, 5\); class activation maps need .* 4-D output"):
        G.GradCAM("6").explain(Torch(small_cnn), x)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 3))
    with pytest.raises(ValueError, match="looks for the last torch.nn.Conv2d of Sequential .* but it has none"):
        G.GuidedGradCAM().explain(Torch(mlp), x)
    with pytest.raises(ValueError, match="Layer 'conv' ran 2 times in one forward pass"):
        G.GradCAM().explain(Torch(Twice()), x)


def test_target_and_input_errors(small_cnn, x):
    with pytest.raises(ValueError, match=r"target \[5\] is out of range: the model returns 5 classes"):
        G.Saliency().explain(Torch(small_cnn), x, target=[0, 5])
    with pytest.raises(ValueError, match=r"target \[-1\] is out of range"):
        G.IntegratedGradients(n_steps=2).explain(Torch(small_cnn), x, target=-1)
    with pytest.raises(TypeError, match="target must be None, an int or a sequence of ints"):
        G.GradCAM().explain(Torch(small_cnn), x, target="cat")
    with pytest.raises(ValueError, match="It looks batched"):
        G.Saliency().explain(Torch(small_cnn), x[None])
    with pytest.raises(ValueError, match="baseline has shape"):
        G.IntegratedGradients(baseline=np.zeros((3, 4, 4))).explain(Torch(small_cnn), x)


# --- hooks, autograd state, the user's model ------------------------------------------------------

class RaiseOnCall(nn.Module):
    """Raises on its ``n``-th call (counting from 1)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("model failed on purpose")
        return x


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("fail_at", [2, 3])   # call 1 is the reference query; then the first gradient batch,
def test_hooks_removed_when_the_model_raises(name, fail_at, rng):   # or the second, after a backward pass
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), RaiseOnCall(fail_at), nn.Conv2d(4, 4, 3),
                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = rng.random((3, 9, 9), dtype=np.float32)
    with pytest.raises(RuntimeError, match="model failed on purpose"):
        methods()[name].explain(Torch(net, batch_size=1), x, target=[0, 1])
    assert hook_count(net) == 0


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_model_and_autograd_state_untouched(name, small_cnn, x):
    net = copy.deepcopy(small_cnn)
    net[0].weight.requires_grad_(False)              # a frozen layer must stay frozen
    before = {k: (p.detach().clone(), p.requires_grad) for k, p in net.named_parameters()}
    with torch.no_grad():                              # the caller's grad mode must not matter
        e = methods()[name].explain(Torch(net), x, target=[1, 2])
        assert not torch.is_grad_enabled()
    assert np.abs(e.attributions).max() > 0
    assert hook_count(net) == 0
    assert not net.training
    for k, p in net.named_parameters():
        assert torch.equal(p.detach(), before[k][0]), k
        assert p.requires_grad == before[k][1], k
        assert p.grad is None, k


def test_inference_mode_caller_gets_same_result(small_cnn, x):
    plain = G.IntegratedGradients(n_steps=4).explain(Torch(small_cnn), x, target=1)
    with torch.inference_mode():
        inside = G.IntegratedGradients(n_steps=4).explain(Torch(small_cnn), x, target=1)
    np.testing.assert_array_equal(plain.attributions, inside.attributions)


# --- batching and targets --------------------------------------------------------------------------

@pytest.mark.parametrize("name", METHOD_NAMES)
def test_multi_target_equals_one_by_one(name, small_cnn, x):
    explainer = methods()[name]
    multi = explainer.explain(Torch(small_cnn, batch_size=4), x, target=[3, 0, 3])
    assert multi.attributions.shape == (3, *SHAPE[1:])
    np.testing.assert_array_equal(multi.targets, [3, 0, 3])
    for i, t in enumerate([3, 0, 3]):
        one = explainer.explain(Torch(small_cnn, batch_size=4), x, target=t)
        assert one.attributions.shape == SHAPE[1:]
        np.testing.assert_allclose(multi.attributions[i], one.attributions, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(multi.raw[i], one.raw[0], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(multi.scores[i], one.scores[0], rtol=1e-6)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_batch_size_does_not_change_results(name, small_cnn, x):
    """Rows differentiated in one batched backward pass equal rows done one at a time."""
    explainer = methods()[name]
    batched = explainer.explain(Torch(small_cnn, batch_size=64), x, target=[1, 4])
    one_by_one = explainer.explain(Torch(small_cnn, batch_size=1), x, target=[1, 4])
    np.testing.assert_allclose(batched.raw, one_by_one.raw, rtol=1e-4, atol=1e-9)


def test_internal_batch_sizes(small_cnn, x):
    ig = G.IntegratedGradients(n_steps=10, internal_batch_size=3).explain(Torch(small_cnn), x, target=2)
    ref = G.IntegratedGradients(n_steps=10).explain(Torch(small_cnn), x, target=2)
    np.testing.assert_allclose(ig.raw, ref.raw, rtol=1e-4, atol=1e-9)
    sg = G.SmoothGrad(G.Saliency(), n_samples=5, samples_per_batch=2, random_state=0)
    ref = G.SmoothGrad(G.Saliency(), n_samples=5, samples_per_batch=5, random_state=0)
    np.testing.assert_allclose(sg.explain(Torch(small_cnn), x, 2).raw, ref.explain(Torch(small_cnn), x, 2).raw,
                               rtol=1e-5, atol=1e-9)


def test_top_class_and_explanation_fields(small_cnn, x):
    logits = small_cnn(torch.as_tensor(x)[None]).detach().numpy()[0]
    adapter = Torch(small_cnn)
    e = G.GradCAM().explain(adapter, x)
    assert e.targets.tolist() == [int(np.argmax(logits))]
    np.testing.assert_allclose(e.scores, logits[e.targets], rtol=1e-5)
    assert e.method == "GradCAM"
    assert e.params == {"layer": None, "relu": True, "upsample": "nearest"}
    assert e.layer == "2"                                           # the last Conv2d of small_cnn
    assert e.raw.shape == (1, 10, 12) and e.attributions.shape == SHAPE[1:]
    assert e.input_layout == "CHW" and e.input.shape == SHAPE and e.seconds > 0
    assert e.n_queries == 2 and adapter.n_queries == 2          # the reference query and one gradient row
    assert repr(G.SmoothGrad(G.Saliency(), n_samples=3)).startswith("SmoothGrad(base=Saliency(abs=True")


class CountingModule(nn.Module):
    """Wraps a module and counts the rows it evaluates."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x):
        self.rows += len(x)
        return self.inner(x)


@pytest.mark.parametrize(("name", "queries_per_target", "fixed"), [   # fixed: f(x), the reference query of every method
    ("saliency", 1, 1), ("input_x_gradient", 1, 1), ("guided_backprop", 1, 1), ("deconvnet", 1, 1),
    ("gradcam", 1, 1), ("gradcampp", 1, 1), ("guided_gradcam", 2, 1),
    ("ig_trapezoid", 8, 2),          # n_steps rows per target, f(x) and f(baseline)
    ("smoothgrad", 4, 1),            # n_samples rows per target, f(x)
    ("vargrad_ig", 3 * 3, 1 + 0),    # n_samples * n_steps per target; IG's f(baseline) not asked for
])
def test_queries_are_counted(name, queries_per_target, fixed, small_cnn, x):
    counting = CountingModule(small_cnn)
    adapter = Torch(counting, batch_size=5)
    e = methods()[name].explain(adapter, x, target=[0, 1, 2])
    assert e.n_queries == 3 * queries_per_target + fixed
    assert adapter.n_queries == counting.rows == e.n_queries


# --- reductions and layouts -----------------------------------------------------------------------

@pytest.mark.parametrize(("reduction", "fn"), [
    ("sum", lambda a: a.sum(1)), ("abs_sum", lambda a: np.abs(a).sum(1)), ("max_abs", lambda a: np.abs(a).max(1)),
    ("l2", lambda a: np.sqrt((a ** 2).sum(1))), ("mean", lambda a: a.mean(1))])
def test_reductions(reduction, fn, small_cnn, x):
    e = G.InputXGradient(reduction=reduction).explain(Torch(small_cnn), x, target=[0, 3])
    assert e.raw.shape == (2, *SHAPE)
    np.testing.assert_allclose(e.attributions, fn(e.raw), rtol=1e-12)
    assert G.InputXGradient().reduction == "sum"


class ChannelsLast(nn.Module):
    """Takes (N, H, W, C) batches and hands (N, C, H, W) to the inner module."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("name", ["signed_saliency", "ig_trapezoid", "gradcam", "guided_gradcam"])
def test_channels_last_layout(name, small_cnn, x):
    chw = methods()[name].explain(Torch(small_cnn), x, target=[1, 2])
    hwc = methods()[name].explain(Torch(ChannelsLast(small_cnn), input_layout="HWC"),
                                  np.moveaxis(x, 0, -1), target=[1, 2])
    np.testing.assert_allclose(hwc.attributions, chw.attributions, rtol=1e-5, atol=1e-9)
    assert hwc.input_layout == "HWC"


# --- properties and hand-computed cases -------------------------------------------------------------

@pytest.mark.parametrize("method", ["gausslegendre", "trapezoid", "riemann_trapezoid"])
def test_ig_completeness_gap_shrinks_with_steps(method, small_cnn, x):
    """A ReLU network's path integrand is piecewise constant: the gap falls about as 1/n_steps."""
    gaps = []
    for n_steps in (4, 32, 256):
        e = G.IntegratedGradients(n_steps=n_steps, method=method).explain(Torch(small_cnn), x, target=[0, 3])
        np.testing.assert_allclose(e.completeness_gap, e.raw.reshape(2, -1).sum(1) - e.score_difference)
        gaps.append(np.abs(e.completeness_gap))
    gaps = np.array(gaps)
    assert np.all(np.diff(gaps, axis=0) < 0), gaps
    assert np.all(gaps[-1] < 0.01 * np.abs(e.score_difference)), (gaps, e.score_difference)


def test_ig_is_exact_for_a_linear_model(rng):
    """f linear: attributions are w * (x - b) for any number of steps (Captum's trapezoid: (n-1)/n of it)."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 4, 3))
    x = rng.random((2, 5, 4), dtype=np.float32)
    w = lin[1].weight.detach().numpy().reshape(3, 2, 5, 4)
    exact = w[[0, 2]] * (x - 0.5)
    for method, n, share in (("trapezoid", 2, 1.0), ("gausslegendre", 1, 1.0), ("riemann_trapezoid", 4, 0.75)):
        e = G.IntegratedGradients(n_steps=n, method=method, baseline=0.5).explain(Torch(lin), x, target=[0, 2])
        np.testing.assert_allclose(e.raw, share * exact, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(e.completeness_gap, (share - 1) * e.score_difference, atol=1e-6)


def test_gradcampp_hand_case():
    """Score = sum_c v_c * sum_ij A_cij: the gradient is v_c everywhere, so every weight has a closed form."""
    conv = nn.Conv2d(1, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1, 1))
    head = nn.Linear(3, 1, bias=False)
    v = np.array([0.5, -1.0, 2.0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(v, dtype=torch.float32)[None])
    net = nn.Sequential(conv, nn.Flatten(2), SumLast(), head)
    x = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4) / 12
    A = np.array([1.0, 2.0, 0.5])[:, None, None] * x                 # layer output (3, 3, 4)
    S = A.sum(axis=(1, 2))
    alpha = v ** 2 / (2 * v ** 2 + S * v ** 3 + 1e-6)
    weights = np.maximum(v, 0) * alpha * 12                          # 12 locations, same alpha at each
    expected = np.maximum((weights[:, None, None] * A).sum(0), 0)
    e = G.GradCAMpp().explain(Torch(net), x, target=0)
    np.testing.assert_allclose(e.raw[0], expected, rtol=1e-5)
    cam = G.GradCAM().explain(Torch(net), x, target=0)               # plain weights: the mean gradient, v_c
    np.testing.assert_allclose(cam.raw[0], np.maximum((v[:, None, None] * A).sum(0), 0), rtol=1e-5)


class SumLast(nn.Module):
    def forward(self, x):
        return x.sum(-1)


def test_guided_and_deconv_on_a_hand_network():
    """y = sum(w2 * relu(w1 * x)): the three ReLU gradient rules, worked out by hand."""
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.Conv2d(1, 1, 1, bias=False), nn.Flatten())
    with torch.no_grad():
        net[0].weight.fill_(2.0)
        net[2].weight.fill_(-1.0)
    x = np.array([[[1.0, -1.0]]], dtype=np.float32)      # (1, 1, 2): one active, one inactive ReLU
    model = Torch(net)
    # scores are the two output cells; explain cell 0 (active ReLU) and cell 1 (inactive)
    plain = G.Saliency(abs=False).explain(model, x, target=[0, 1]).raw[:, 0, 0]
    guided = G.GuidedBackprop().explain(model, x, target=[0, 1]).raw[:, 0, 0]
    deconv = G.Deconvnet().explain(model, x, target=[0, 1]).raw[:, 0, 0]
    np.testing.assert_allclose(plain, [[-2, 0], [0, 0]])       # w1 * relu'(2x) * w2
    np.testing.assert_allclose(guided, [[0, 0], [0, 0]])       # relu of the negative gradient: nothing passes
    np.testing.assert_allclose(deconv, [[0, 0], [0, 0]])       # relu(w2 = -1) = 0 as well
    with torch.no_grad():
        net[2].weight.fill_(3.0)
    np.testing.assert_allclose(G.GuidedBackprop().explain(model, x, target=[0, 1]).raw[:, 0, 0], [[6, 0], [0, 0]])
    np.testing.assert_allclose(G.Deconvnet().explain(model, x, target=[0, 1]).raw[:, 0, 0], [[6, 0], [0, 6]])
