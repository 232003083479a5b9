"""LRP as module hooks: each layer's rule replaces its gradient, so one backward pass carries relevance.

While :func:`lrp_hooks` is active, the backward pass of the model moves relevance, not
gradients: a convolution or linear layer (merged with the batch norm that follows it)
hands it down by its rule, an average pooling and a residual sum share it in proportion
to their inputs (zennit's ``Norm``), an elementwise activation passes it through
unchanged, max pooling routes it to the maximum, reshapes move it. A module of any other
type makes :func:`plan` raise, naming the module: relevance through it would be
undefined.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._hooks import keep_input
from ._lrp_rules import Norm, Rule

LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
#: relevance follows the gradient (winner takes all, reshapes, identities)
GRADIENT = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
            nn.Dropout3d, nn.AlphaDropout)
#: elementwise activations: relevance passes through unchanged (zennit's ``Pass``)
ACTIVATION = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.RReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
              nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
              nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold)
#: what an entry of ``rules=`` may be besides a Rule
SPECIAL = ("pass", "gradient")


@dataclass
class Plan:
    """Which rule each module of a model gets.

    Attributes
    ----------
    rules : {module: (name, Rule)}
        Convolutions and linear layers (with ``merged`` batch norm folded in).
    merged : {batch norm: linear module}
        Batch norms that directly follow a linear module (in the order of the leaves).
    passes : set of modules
        Relevance passes unchanged (activations, a batch norm not after a linear layer, "pass").
    norms : {module: name}
        Average pooling: proportional sharing.
    """

    rules: dict[nn.Module, tuple[str, Rule]] = field(default_factory=dict)
    merged: dict[nn.Module, nn.Module] = field(default_factory=dict)
    passes: set[nn.Module] = field(default_factory=set)
    norms: dict[nn.Module, str] = field(default_factory=dict)


def leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules (no children) in registration order, with their names."""
    return [(name, m) for name, m in module.named_modules() if next(m.children(), None) is None]


def plan(module: nn.Module, choose: Callable[[str, nn.Module], Rule], overrides: dict[str, object],
         owner: str) -> Plan:
    """Assign a rule to every module of ``module`` (``choose`` for linear units, ``overrides`` by name).

    Raises
    ------
    ValueError
        A leaf module of a type without a rule, a module with parameters of its own that
        has children (its parameters are used outside any layer), or an override naming
        no module.
    """
    named = dict(module.named_modules())
    unknown = [n for n in overrides if n not in named or n == ""]
    if unknown:
        raise ValueError(f"The 'rules' parameter of {owner} names {unknown}, which are not modules of "
                         f"{type(module).__name__}; names look like {[n for n in named if n][:6]}.")
    result, previous = Plan(), None
    for name, m in leaves(module):
        rule = overrides.get(name)
        if rule == "pass" and isinstance(m, LINEAR):
            raise ValueError(f"The 'rules' parameter of {owner} asks {name!r} ({type(m).__name__}) to pass relevance "
                             f"through unchanged, which needs a layer whose output has its input's shape; give it a "
                             f"rule (Epsilon(), Gamma(), ...) or 'gradient'.")
        if rule == "pass":
            result.passes.add(m)
        elif rule == "gradient":
            pass
        elif isinstance(m, LINEAR):
            result.rules[m] = (name, rule if rule is not None else choose(name, m))
        elif isinstance(m, BATCHNORM):
            if isinstance(previous, LINEAR) and previous in result.rules:
                result.merged[m] = previous
            else:
                result.passes.add(m)
        elif isinstance(m, AVGPOOL):
            result.norms[m] = name
        elif isinstance(m, ACTIVATION):
            result.passes.add(m)
        elif not isinstance(m, GRADIENT):
            raise ValueError(_no_rule(owner, name, m))
        previous = m
    holders = [n for n, m in named.items() if next(m.children(), None) is not None
               and any(True for _ in m.parameters(recurse=False))]
    if holders:
        raise ValueError(f"The 'model' argument of {owner} has parameters used outside any layer (in the forward "
                         f"code of {holders[0] or type(module).__name__!r}); LRP has no rule for them. LRP needs "
                         f"networks of convolutions, linear layers, batch norms, pooling and elementwise activations.")
    return result


def _no_rule(owner: str, name: str, m: nn.Module) -> str:
    return (f"The 'model' argument of {owner} contains layer {name!r} of type {type(m).__name__}, for which LRP has no "
            f"rule. LRP handles convolutions and linear layers (by the composite's rules), batch norm (merged into "
            f"the preceding layer), average pooling (proportional), max pooling, reshapes and dropout (gradient) and "
            f"elementwise activations (relevance passes through). To let relevance through this layer unchanged, pass "
            f"rules={{{name!r}: 'pass'}} (or 'gradient' to use its gradient).")


def merged_parameters(linear: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of ``linear`` with the batch norm ``bn`` (eval statistics) folded in, as zennit merges them."""
    weight, bias = linear.weight, linear.bias
    if bn is None:
        return weight, bias
    scale = (bn.weight if bn.weight is not None else 1.0) / (bn.running_var + bn.eps) ** .5
    weight = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
    bias = ((bias if bias is not None else torch.zeros(1, device=weight.device)) - bn.running_mean) * scale
    return weight, bias + (bn.bias if bn.bias is not None else 0.0)


def layer_function(linear: nn.Module) -> Callable:
    """``f(input, weight, bias)``: the module's operation with other parameters."""
    if isinstance(linear, nn.Linear):
        return torch.nn.functional.linear
    return linear._conv_forward


class _Relevance(torch.autograd.Function):
    """Forward: the module's output unchanged; backward: the rule's relevance for the unit's input."""

    @staticmethod
    def forward(ctx, a, out, compute, log):
        ctx.save_for_backward(a.detach())
        ctx.compute, ctx.log = compute, log
        return out.clone()

    @staticmethod
    def backward(ctx, upper):
        (a,) = ctx.saved_tensors
        lower = ctx.compute(a, upper)
        if ctx.log is not None:
            ctx.log(upper, lower)
        return lower, None, None, None


class RelevanceLog:
    """Per-unit sums of relevance at the output and at the input, per row, in backward order."""

    def __init__(self) -> None:
        self.sums: dict[str, list[np.ndarray]] = {}
        self.calls: dict[str, int] = {}

    def key(self, name: str) -> str:
        """The unit's key in this forward pass (``name#2`` for its second call)."""
        k = self.calls.get(name, 0) + 1
        self.calls[name] = k
        return name if k == 1 else f"{name}#{k}"

    def logger(self, key: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def log(upper: torch.Tensor, lower: torch.Tensor) -> None:
            pair = torch.stack([upper.detach().flatten(1).sum(1), lower.detach().flatten(1).sum(1)], dim=1)
            self.sums.setdefault(key, []).append(pair.to("cpu", torch.float64).numpy())
        return log

    def table(self) -> dict[str, np.ndarray]:
        """``{unit: (rows, 2)}``: relevance entering the unit from above and leaving it below."""
        return {k: np.concatenate(v) for k, v in self.sums.items()}


@contextmanager
def lrp_hooks(module: nn.Module, the_plan: Plan, use_bias: bool, log: RelevanceLog) -> Iterator[None]:
    """Hooks of every planned module, and the residual blocks' forward passes made explicit, inside the block."""
    with ExitStack() as stack:
        stack.enter_context(_residual_sums(module, log))
        handles = [module.register_forward_pre_hook(lambda *_: log.calls.clear())]
        pending: dict[nn.Module, list] = {}
        for m, (name, rule) in the_plan.rules.items():
            pending[m] = []
            handles.append(m.register_forward_pre_hook(keep_input(pending[m])))
            bn = next((b for b, lin in the_plan.merged.items() if lin is m), None)
            if bn is None:
                handles.append(m.register_forward_hook(_apply_rule(pending[m], m, None, name, rule, use_bias, log)))
        for bn, lin in the_plan.merged.items():
            name, rule = the_plan.rules[lin]
            slot: list[torch.Tensor] = []
            handles.append(lin.register_forward_hook(_remember(slot)))
            handles.append(bn.register_forward_pre_hook(_check_follows(slot, name)))
            handles.append(bn.register_forward_hook(_apply_rule(pending[lin], lin, bn, name, rule, use_bias, log)))
        for m in the_plan.passes:
            pending[m] = []
            handles.append(m.register_forward_pre_hook(keep_input(pending[m])))
            handles.append(m.register_forward_hook(_pass_through(pending[m])))
        for m, name in the_plan.norms.items():
            pending[m] = []
            handles.append(m.register_forward_pre_hook(keep_input(pending[m])))
            handles.append(m.register_forward_hook(_norm(pending[m], m, name, log)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _apply_rule(pending: list, linear: nn.Module, bn: nn.Module | None, name: str, rule: Rule, use_bias: bool,
                log: RelevanceLog):
    layer = layer_function(linear)

    def compute(a: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        weight, bias = merged_parameters(linear, bn)
        with torch.no_grad():
            weight, bias = weight.detach(), None if bias is None else bias.detach()
        return rule.relevance(layer, a, weight, bias, upper, use_bias=use_bias)

    def hook(_module, _inputs, output):
        a = pending.pop()
        if a is None:
            return None
        return _Relevance.apply(a, output.detach(), compute, log.logger(log.key(name)))
    return hook


def _remember(slot: list):
    def hook(_module, _inputs, output):
        slot[:] = [output]
    return hook


def _check_follows(slot: list, linear_name: str):
    def hook(module, inputs):
        if not slot or inputs[0] is not slot[0]:
            raise ValueError(f"The 'model' argument of LRP has a {type(module).__name__} registered right after "
                             f"{linear_name!r} that does not normalise that layer's output in the forward pass; LRP "
                             f"merges a batch norm into the layer before it, which needs the registration order of "
                             f"the modules to follow the forward pass.")
        slot.clear()
    return hook


def _pass_through(pending: list):
    def hook(module, _inputs, output):
        inp = pending.pop()
        if inp is None:
            return None
        if inp.shape != output.shape:
            raise ValueError(f"LRP passes relevance through {type(module).__name__} unchanged, but it turns "
                             f"{tuple(inp.shape)} into {tuple(output.shape)}; give it the 'gradient' rule "
                             f"(rules={{name: 'gradient'}}).")
        return output.detach() + (inp - inp.detach())
    return hook


def _norm(pending: list, module: nn.Module, name: str, log: RelevanceLog):
    rule = Norm()

    def compute(a: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        return rule.relevance(lambda inp, _w, _b: module.forward(inp), a, None, None, upper)   # no hooks

    def hook(_module, _inputs, output):
        a = pending.pop()
        if a is None:
            return None
        return _Relevance.apply(a, output.detach(), compute, log.logger(log.key(name)))
    return hook


def residual_sum(identity: torch.Tensor, out: torch.Tensor, log: RelevanceLog | None = None,
                 name: str = "sum") -> torch.Tensor:
    """``identity + out`` whose relevance is shared in proportion to the two terms (zennit's ``Norm`` on a ``Sum``)."""
    stacked = torch.stack([identity, out], dim=-1)
    if not (torch.is_grad_enabled() and stacked.requires_grad):
        return stacked.sum(dim=-1)
    rule = Norm()

    def compute(a: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        return rule.relevance(lambda inp, _w, _b: inp.sum(dim=-1), a, None, None, upper)

    logger = None if log is None else log.logger(log.key(name))
    return _Relevance.apply(stacked, stacked.detach().sum(dim=-1), compute, logger)


def is_residual_block(m: nn.Module) -> str | None:
    """``"basic"`` or ``"bottleneck"`` for a block with torchvision's ResNet attribute names, else None."""
    names = ("conv1", "bn1", "conv2", "bn2", "relu")
    if not all(isinstance(getattr(m, n, None), nn.Module) for n in names) or not hasattr(m, "downsample"):
        return None
    if isinstance(getattr(m, "conv3", None), nn.Module) and isinstance(getattr(m, "bn3", None), nn.Module):
        return "bottleneck"
    return "basic"


def _basic_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return getattr(self, "relu2", self.relu)(residual_sum(identity, out, self._lrp_log, self._lrp_name))


def _bottleneck_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return getattr(self, "relu2", self.relu)(residual_sum(identity, out, self._lrp_log, self._lrp_name))


@contextmanager
def _residual_sums(module: nn.Module, log: RelevanceLog) -> Iterator[None]:
    """Give ResNet blocks (torchvision's attribute names) a forward whose residual addition has the Norm rule."""
    patched = []
    for name, m in module.named_modules():
        kind = is_residual_block(m)
        if kind is not None:
            forward = _basic_forward if kind == "basic" else _bottleneck_forward
            m.forward = types.MethodType(forward, m)
            m._lrp_log, m._lrp_name = log, f"{name}.sum" if name else "sum"
            patched.append(m)
    try:
        yield
    finally:
        for m in patched:
            for attr in ("forward", "_lrp_log", "_lrp_name"):
                m.__dict__.pop(attr, None)
