"""LRP against zennit's composites, relevance conservation layer by layer, and LRP's errors.

zennit runs on a copy of each model whose batch norms carry their ``eps`` in the running
variance (``var + eps`` with ``eps = 0``: the same function). zennit merges a batch norm
into the layer before it and leaves the batch norm computing ``x / sqrt(1 + eps)``; with
``eps`` folded in, that is exactly ``x``, so both sides explain the same function. Our
ResNet-shaped blocks get the canonizer zennit has for torchvision's blocks (a ``Sum``
module for the residual addition).

zennit imports torchvision at import time (for its torchvision canonizers). With a CPU
build of torch, PyPI's torchvision cannot load its compiled operators and fails to
import; zennit's rules, composites and generic canonizers never use it, so the import is
then made with a stand-in that holds the two class names zennit reads, removed again
right after.
"""

from __future__ import annotations

import copy
import sys
import types
import warnings

import numpy as np
import pytest

from perturbx.adapters import Torch

torch = pytest.importorskip("torch")
G = pytest.importorskip("perturbx.gradients")
models = pytest.importorskip("perturbx.models")
from torch import nn  # noqa: E402

from perturbx.models.vgg import vgg_shaped  # noqa: E402

LRP = G.LRP
lrp = pytest.importorskip("perturbx.gradients.lrp")


def import_zennit():
    """zennit, importable even where torchvision is not (see the module docstring)."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or RuntimeError from a torchvision built for another torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stand_in = {name: types.ModuleType(name) for name in
                    ("torchvision", "torchvision.models", "torchvision.models.resnet")}
        resnet = stand_in["torchvision.models.resnet"]
        resnet.BasicBlock = type("BasicBlock", (nn.Module,), {})
        resnet.Bottleneck = type("Bottleneck", (nn.Module,), {})
        stand_in["torchvision"].models = stand_in["torchvision.models"]
        stand_in["torchvision.models"].resnet = resnet
        sys.modules.update(stand_in)
        try:
            return pytest.importorskip("zennit")
        finally:
            for name in stand_in:
                sys.modules.pop(name, None)
    return pytest.importorskip("zennit")


zennit = import_zennit()
import zennit.attribution as za  # noqa: E402
import zennit.canonizers as zc  # noqa: E402
import zennit.composites as zco  # noqa: E402
import zennit.layer as zl  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BlockCanonizer(zc.AttributeCanonizer):
    """zennit's ResNetBasicBlockCanonizer for perturbx's ResNet-shaped blocks (their second ReLU is ``relu2``)."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if isinstance(module, models._BasicBlock):
            return {"forward": cls.forward.__get__(module), "canonizer_sum": zl.Sum()}
        return None

    @staticmethod
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.canonizer_sum(torch.stack([identity, out], dim=-1)))


def folded(net: nn.Module) -> nn.Module:
    """A copy whose batch norms have ``eps`` folded into the running variance (the same function)."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_var.add_(m.eps)
            m.eps = 0.0
    return net


ZENNIT = {
    "epsilon_gamma_box": lambda canon, zero: zco.EpsilonGammaBox(low=0.0, high=1.0, canonizers=canon, zero_params=zero),
    "epsilon_plus": lambda canon, zero: zco.EpsilonPlus(canonizers=canon, zero_params=zero),
    "epsilon_alpha2_beta1": lambda canon, zero: zco.EpsilonAlpha2Beta1(canonizers=canon, zero_params=zero),
}


def zennit_relevance(net: nn.Module, x: np.ndarray, target: int, composite: str, *, zero_bias: bool = False):
    ref = folded(net)
    canon = [zc.SequentialMergeBatchNorm()] + ([BlockCanonizer()] if any(
        isinstance(m, models._BasicBlock) for m in net.modules()) else [])
    comp = ZENNIT[composite](canon, "bias" if zero_bias else None)
    inp = torch.as_tensor(x)[None].requires_grad_(True)
    with warnings.catch_warnings(), za.Gradient(model=ref, composite=comp) as attributor:
        warnings.simplefilter("ignore")
        _, rel = attributor(inp, lambda out: out * torch.eye(out.shape[1])[[target]])
    return rel[0].detach().to(torch.float64).numpy()


@pytest.fixture(scope="module", params=["vgg_bn", "resnet18_shaped"])
def case(request):
    """(model, input in [0, 1], its two highest classes)."""
    x = np.random.default_rng(7).random((3, 64, 64), dtype=np.float32)
    if request.param == "vgg_bn":
        net = vgg_shaped(10, width=1 / 8, batch_norm=True, pool=2, random_state=0)
    else:
        net = models.resnet18_shaped(n_classes=10, random_state=0)
    with torch.no_grad():
        logits = net(torch.as_tensor(x)[None])[0].numpy()
    return net, x, [int(t) for t in np.argsort(-logits)[:2]]


def close(ours, ref, rel=1e-5):
    scale = float(np.abs(ref).max())
    assert scale > 0
    np.testing.assert_allclose(ours, ref, rtol=0, atol=rel * scale)


def merged(net: nn.Module) -> nn.Module:
    """A copy with every batch norm merged into its convolution for good (zennit's merge, never reverted)."""
    net = folded(net)
    zc.SequentialMergeBatchNorm().apply(net)
    return net


@pytest.mark.parametrize("composite", list(ZENNIT))
@pytest.mark.parametrize("bias", [True, False])
def test_equals_zennit(case, composite, bias):
    """With biases, on the model itself. Without biases, denominators ``W a`` can come close to zero, where the
    float32 rounding of zennit's forward pass (batch norms merged into the weights) and of the model's own differ
    visibly; there both run the model with its batch norms already merged (merging itself is checked with biases)."""
    net, x, targets = case
    net = net if bias else merged(net)
    e = LRP(composite, bias=bias).explain(Torch(net, batch_size=1), x, target=targets)
    for i, t in enumerate(targets):
        close(e.raw[i], zennit_relevance(net, x, t, composite, zero_bias=not bias))
    assert e.n_queries == 1 + len(targets)


def test_plain_vgg_and_the_epsilon_composite():
    """No batch norm: every convolution and linear layer with epsilon is zennit's EpsilonPlus with ZPlus -> Epsilon."""
    net = vgg_shaped(10, width=1 / 8, pool=2, random_state=1)
    x = np.random.default_rng(3).random((3, 32, 32), dtype=np.float32)
    e = LRP("epsilon", epsilon=1e-3).explain(Torch(net), x, target=4)
    from zennit.rules import Epsilon
    from zennit.types import Convolution

    comp = zco.EpsilonPlus(epsilon=1e-3, layer_map=[(Convolution, Epsilon(epsilon=1e-3))])
    inp = torch.as_tensor(x)[None].requires_grad_(True)
    with za.Gradient(model=net, composite=comp) as attributor:
        _, rel = attributor(inp, lambda out: out * torch.eye(10)[[4]])
    close(e.raw[0], rel[0].detach().double().numpy())


# --- conservation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1"])
def test_relevance_is_conserved_layer_by_layer(case, composite):
    """Without biases every rule hands down what it received, up to the stabiliser: 1e-4 relative with a 1e-9 one.

    (A neuron keeps the share ``eps / (z + eps)`` of its relevance. The usual composites divide convolutions by sums
    of positive contributions, far from zero; LRP-epsilon on every layer divides by ``W a``, which can be as small as
    float32 rounding, so there conservation is only what epsilon leaves: see the next test.)"""
    net, x, targets = case
    e = LRP(composite, bias=False, epsilon=1e-9, stabilizer=1e-9).explain(Torch(net), x, target=targets)
    layers = e.conservation
    n_rules = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
    assert len(layers) >= n_rules
    for name, table in layers.items():
        upper, lower = table[:, 0], table[:, 1]
        np.testing.assert_allclose(lower, upper, rtol=1e-4, atol=1e-7, err_msg=name)
    top = next(k for k in layers if k in ("classifier.6", "fc"))
    np.testing.assert_allclose(layers[top][:, 0], e.scores, rtol=1e-6)      # relevance starts at f_t(x)
    np.testing.assert_allclose(e.raw.reshape(len(targets), -1).sum(1), e.scores, rtol=1e-3)


def test_epsilon_absorbs_more_relevance_the_larger_it_is(case):
    net, x, targets = case
    kept = [LRP("epsilon", epsilon=eps, bias=False).explain(Torch(net), x, target=targets[0]).raw.sum()
            for eps in (1e-6, 1e-2, 1e-1)]
    assert abs(kept[0]) > abs(kept[1]) > abs(kept[2])


def test_biases_absorb_relevance_and_the_table_shows_where(case):
    net, x, targets = case
    e = LRP("epsilon_plus").explain(Torch(net), x, target=targets[0])
    gaps = {k: abs(v[0, 0] - v[0, 1]) / abs(v[0, 0]) for k, v in e.conservation.items()}
    assert max(gaps.values()) > 1e-3      # biases (and merged batch norms) keep a visible share somewhere


def test_a_residual_addition_outside_a_known_block_breaks_conservation():
    """An addition in forward code passes relevance to both terms: conservation fails, and the table shows it."""

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flat = nn.Flatten()
            self.fc = nn.Linear(3, 2, bias=False)

        def forward(self, x):
            return self.fc(self.flat(self.pool(self.conv(x) + x)))

    torch.manual_seed(0)
    x = np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)
    e = LRP("epsilon", bias=False).explain(Torch(Residual().eval()), x, target=0)
    assert abs(e.raw.sum() - e.scores[0]) > 1e-3 * abs(e.scores[0])


# --- behaviour and errors -------------------------------------------------------------------------

def test_no_rule_for_a_layer_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(4 * 6 * 6), nn.Linear(144, 2))
    x = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"contains layer '3' of type LayerNorm, for which LRP has no rule.*"
                                         r"rules=\{'3': 'pass'\}"):
        LRP().explain(Torch(net), x, target=0)
    e = LRP(rules={"3": "pass"}).explain(Torch(net), x, target=0)   # the way out the message names
    assert np.isfinite(e.attributions).all() and np.abs(e.attributions).max() > 0


def test_parameters_used_outside_a_layer_are_an_error():
    from perturbx.models.vit import TinyViT

    vit = TinyViT(depth=1, dim=16, heads=2, grid=2, patch_size=4)
    x = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="LayerNorm, for which LRP has no rule"):
        LRP().explain(Torch(vit), x)
    rules = {n: "pass" for n, m in vit.named_modules() if isinstance(m, (nn.LayerNorm, nn.Softmax))}
    with pytest.raises(ValueError, match="has parameters used outside any layer"):
        LRP(rules=rules).explain(Torch(vit), x)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"composite": "zplus"}, ValueError, "The 'composite' parameter of LRP must be one of"),
    ({"rules": ["features.0"]}, TypeError, "The 'rules' parameter of LRP must be a dict"),
    ({"rules": {"features.0": "relu"}}, TypeError, "maps module names .* to a rule"),
    ({"bias": 0}, TypeError, "The 'bias' parameter of LRP must be True or False"),
    ({"gamma": -1.0}, ValueError, "The 'gamma' parameter of Gamma must be >= 0"),
    ({"epsilon": "small"}, TypeError, "The 'epsilon' parameter of Epsilon must be a finite number"),
    ({"low": 1.0, "high": 0.0}, ValueError, "The 'low' parameter of ZBox must not exceed 'high'"),
])
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        LRP(**kwargs)


def test_alpha_beta_must_conserve():
    with pytest.raises(ValueError, match="must differ by exactly 1"):
        lrp.AlphaBeta(alpha=2.0, beta=2.0)


def test_a_rules_override_naming_no_module(case):
    net, x, _ = case
    with pytest.raises(ValueError, match=r"The 'rules' parameter of LRP names \['nope'\]"):
        LRP(rules={"nope": "pass"}).explain(Torch(net), x)


def test_per_layer_rules_and_the_rule_table():
    net = vgg_shaped(10, width=1 / 8, pool=2, random_state=1)
    x = np.random.default_rng(3).random((3, 32, 32), dtype=np.float32)
    e = LRP(rules={"features.3": lrp.Epsilon(0.25)}).explain(Torch(net), x, target=1)
    assert isinstance(e.rules["features.0"], lrp.ZBox) and isinstance(e.rules["features.3"], lrp.Epsilon)
    assert isinstance(e.rules["features.6"], lrp.Gamma) and isinstance(e.rules["classifier.0"], lrp.Epsilon)
    base = LRP().explain(Torch(net), x, target=1)
    assert not np.allclose(e.raw, base.raw)
