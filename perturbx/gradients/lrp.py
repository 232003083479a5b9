"""Layer-wise relevance propagation (Bach et al. 2015) with the usual rules and composites (Montavon et al. 2019).

The rules (:class:`Epsilon`, :class:`Gamma`, :class:`AlphaBeta`, :class:`ZPlus`,
:class:`ZBox`) live here; :class:`LRP` applies a composite of them to a model and checks
that relevance is conserved layer by layer (``extras["conservation"]``). Results equal
zennit's composites with its batch-norm merging (tests/test_gradients_zennit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbx._utils import check_choice

from ._lrp_hooks import SPECIAL, Plan, RelevanceLog, leaves, lrp_hooks, plan
from ._lrp_rules import AlphaBeta, Epsilon, Gamma, Norm, Rule, ZBox, ZPlus, stabilize
from ._session import Session, run_gradients
from .base import PixelGradient

__all__ = ["COMPOSITES", "LRP", "AlphaBeta", "Epsilon", "Gamma", "Norm", "Rule", "ZBox", "ZPlus", "stabilize"]

#: composite name -> what it does (zennit's composite of the same name)
COMPOSITES = {
    "epsilon": "epsilon for every convolution and linear layer (LRP-epsilon)",
    "epsilon_plus": "z+ for convolutions, epsilon for linear layers (zennit EpsilonPlus)",
    "epsilon_alpha2_beta1": "alpha=2, beta=1 for convolutions, epsilon for linear layers (zennit EpsilonAlpha2Beta1)",
    "epsilon_gamma_box": "z^B for the first convolution, gamma for the others, epsilon for linear layers "
                         "(zennit EpsilonGammaBox)",
}


class LRP(PixelGradient):
    """Relevance of each input value for the target: the target's score handed down layer by layer.

    The relevance of the output is the target's value ``f_t(x)``; each convolution or
    linear layer hands its relevance to its inputs by its rule (batch norm merged into
    the layer before it, with its running statistics), average pooling and the residual
    sums of ResNet blocks share it in proportion to their inputs, elementwise activations
    pass it through, max pooling gives it to the maximum. With rules that ignore biases
    (``bias=False``) the relevance is conserved at every layer, up to the stabiliser; with
    biases a layer keeps the share of its bias. Equals zennit's ``Gradient`` attributor
    with the composite of the same name, ``SequentialMergeBatchNorm`` and ResNet
    canonizers, started from ``one_hot * output``.

    Parameters
    ----------
    composite : {"epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon"}, default "epsilon_gamma_box"
        Which rule each layer gets (see :data:`COMPOSITES`). "First" means the first
        convolution in ``model.named_modules()`` order, as in zennit.
    epsilon : float, default 1e-6
        Epsilon of the epsilon rule (linear layers).
    gamma : float, default 0.25
        Gamma of the gamma rule.
    stabilizer : float, default 1e-6
        Added to the denominators of the other rules (``z + s sign(z)``).
    low, high : float or array, default 0.0 and 1.0
        Bounds of the input for the z^B rule (arrays broadcast against one sample, e.g.
        ``(C, 1, 1)`` for normalised images).
    rules : dict {module name: Rule, "pass" or "gradient"}, optional
        Overrides by module name: a rule object for a convolution or linear layer, or
        ``"pass"`` (relevance passes unchanged) / ``"gradient"`` for any other layer, e.g.
        one of a type LRP has no rule for.
    bias : bool, default True
        False computes every rule as if the biases were zero (zennit's ``zero_params="bias"``).
    reduction : {"sum", "abs_sum", "max_abs", "l2", "mean"}, default "sum"

    Notes
    -----
    Layers without a rule (``nn.LayerNorm``, attention, ...) make ``explain`` raise a
    ``ValueError`` naming the layer, unless ``rules=`` says what to do with it. A residual
    addition is seen only inside blocks with torchvision's ResNet attribute names
    (``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2``, ``downsample``; ``conv3``, ``bn3`` for
    bottlenecks); additions elsewhere in forward code pass relevance to both terms, which
    breaks conservation (``extras["conservation"]`` shows where). Functional activations
    (``torch.relu``) keep their gradient.
    Queries: one forward row per target. ``extras``: ``raw`` ``(T, *sample_shape)``,
    ``conservation`` ``{layer: (T, 2)}``: the relevance arriving at each layer's output and
    leaving at its input (sums over the layer, per target), ``relevance_out`` ``(T,)`` the
    relevance at the output (``f_t(x)``), ``rules`` ``{layer: rule}``.
    """

    def __init__(self, composite: str = "epsilon_gamma_box", *, epsilon: float = 1e-6, gamma: float = 0.25,
                 stabilizer: float = 1e-6, low: object = 0.0, high: object = 1.0,
                 rules: Mapping[str, object] | None = None, bias: bool = True, reduction: str = "sum") -> None:
        super().__init__(reduction=reduction)
        self.composite = check_choice(composite, "composite", "LRP", tuple(COMPOSITES))
        self.epsilon, self.gamma, self.stabilizer, self.low, self.high = epsilon, gamma, stabilizer, low, high
        self._rules = {"epsilon": Epsilon(epsilon), "gamma": Gamma(gamma, stabilizer), "zplus": ZPlus(stabilizer),
                       "alpha_beta": AlphaBeta(2.0, 1.0, stabilizer), "box": ZBox(low, high, stabilizer)}
        self.rules = _check_rules(rules)
        if not isinstance(bias, bool):
            raise TypeError(f"The 'bias' parameter of LRP must be True or False. Got {bias!r} instead.")
        self.bias = bias

    def _choose(self, first_conv: str | None) -> Callable[[str, nn.Module], Rule]:
        """The composite: a rule for each convolution or linear layer by name and type."""
        conv_rule = {"epsilon": "epsilon", "epsilon_plus": "zplus", "epsilon_alpha2_beta1": "alpha_beta",
                     "epsilon_gamma_box": "gamma"}[self.composite]

        def choose(name: str, module: nn.Module) -> Rule:
            if isinstance(module, nn.Linear):
                return self._rules["epsilon"]
            if self.composite == "epsilon_gamma_box" and name == first_conv:
                return self._rules["box"]
            return self._rules[conv_rule]
        return choose

    def _plan(self, session: Session) -> Plan:
        key = f"lrp_plan:{id(self)}"
        if key not in session.memo:
            convs = [n for n, m in leaves(session.module) if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
            session.memo[key] = plan(session.module, self._choose(convs[0] if convs else None), self.rules, "LRP")
        return session.memo[key]

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        the_plan = self._plan(session)
        log = RelevanceLog()
        session.memo["lrp_log"] = log
        n_targets = session.n_targets
        out = torch.empty((len(xs) * n_targets, *xs.shape[1:]), dtype=torch.float32, device=xs.device)

        def consume(chunk) -> None:
            out[chunk.lo:chunk.hi] = chunk.grad

        rows = torch.arange(len(out), device=xs.device)
        run_gradients(session, len(out), lambda lo, hi: xs[rows[lo:hi] // n_targets], rows % n_targets, consume,
                      hooks=partial(lrp_hooks, session.module, the_plan, self.bias, log), seed_with_value=True)
        return out.view(len(xs), n_targets, *xs.shape[1:])

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        the_plan = self._plan(session)
        table = session.memo["lrp_log"].table()
        n = session.n_targets
        conservation = {k: v[:n] for k, v in table.items() if len(v) >= n}
        return {"conservation": conservation, "relevance_out": np.asarray(session.reference, dtype=np.float64),
                "rules": {name: rule for name, rule in the_plan.rules.values()}}


def _check_rules(rules: object) -> dict[str, object]:
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise TypeError(f"The 'rules' parameter of LRP must be a dict {{module name: rule}}. "
                        f"Got {type(rules).__name__}.")
    for name, rule in rules.items():
        if not isinstance(name, str) or not (isinstance(rule, Rule) or rule in SPECIAL):
            raise TypeError(f"The 'rules' parameter of LRP maps module names (str) to a rule (Epsilon(), Gamma(), "
                            f"AlphaBeta(), ZPlus(), ZBox(...)) or one of {SPECIAL}. Got {name!r}: {rule!r}.")
    return dict(rules)
