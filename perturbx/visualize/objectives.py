"""Objectives: what a visualisation maximises, composable by ``+``, ``-`` and scalar ``*``.

Every objective maps a :class:`Context` (the images, the model's output for them and the
recorded layer outputs) to one value per image, ``(n,)``, to be **maximised**; a weighted
sum of objectives is an objective (``ClassLogit(2) - 0.05 * TotalVariation()``), and so is
the negative of one (``-Channel("features.6", 3)`` looks for what switches a channel off).

Three kinds of terms, by what they read:

============  ==============================================  ====================================
kind          terms                                           works with
============  ==============================================  ====================================
``scores``    :class:`ClassLogit`, :class:`ClassProbability`  any adapter (black box: its scores)
``layer``     :class:`Channel`, :class:`Neuron`,              ``adapters.Torch`` (forward hooks)
              :class:`Direction`, :class:`Diversity` (layer),
              :class:`Match`
``image``     :class:`TotalVariation`, :class:`AlphaNorm`,    any adapter (never calls the model)
              :class:`Diversity` (``layer=None``)
============  ==============================================  ====================================

Lucent's objectives return losses (minimised) and its ``diversity`` is subtracted; here
every term is a quantity to maximise (:class:`Diversity` is minus the similarity), and
regularisers are penalties, so they are subtracted with a weight.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ._torch import torch

KINDS = ("scores", "layer", "image")


@dataclass
class Context:
    """What an objective reads for ``n`` images.

    Attributes
    ----------
    image : torch.Tensor, shape (n, C, H, W)
        The images in [0, 1], before the random transformations (channels first).
    logits : torch.Tensor or None, shape (n, n_classes)
        The model's output for the (transformed) images: the module's output before the
        adapter's softmax for a Torch model, the adapter's scores for a black box.
    layers : dict of str to torch.Tensor
        Output ``(n, C, h, w)`` or ``(n, C)`` of every hooked layer.
    """

    image: object
    logits: object = None
    layers: dict = field(default_factory=dict)

    def rows(self, index) -> Context:
        """The context of the images ``index`` (a slice) only."""
        return Context(self.image[index], None if self.logits is None else self.logits[index],
                       {k: v[index] for k, v in self.layers.items()})


def _is_scalar(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(float(value))


class Objective:
    """A weighted sum of terms; ``objective(ctx)`` is its value per image, ``(n,)``."""

    def terms(self) -> tuple[tuple[float, Term], ...]:
        """The ``(weight, term)`` pairs whose weighted sum this objective is."""
        raise NotImplementedError

    def __call__(self, ctx: Context):
        total = 0.0
        for weight, term in self.terms():
            total = total + weight * term.value(ctx)
        return total

    @property
    def layers(self) -> tuple[str, ...]:
        """Names of the layers the objective reads (in order of first use)."""
        return tuple(dict.fromkeys(t.layer for _, t in self.terms() if t.kind == "layer"))

    @property
    def needs_scores(self) -> bool:
        """True when some term reads the model's output."""
        return any(t.kind == "scores" for _, t in self.terms())

    def select(self, kinds: tuple[str, ...]) -> Objective:
        """The sum of the terms of the given kinds (empty sum: value 0)."""
        return Sum(tuple((w, t) for w, t in self.terms() if t.kind in kinds))

    def __add__(self, other: object) -> Objective:
        if isinstance(other, Objective):
            return Sum(self.terms() + other.terms())
        if _is_scalar(other) and float(other) == 0.0:   # sum() starts from 0
            return self
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, other: object) -> Objective:
        if not _is_scalar(other):
            raise TypeError(f"An objective can only be multiplied by a real number; got {type(other).__name__}. "
                            f"Combine objectives with + and -.")
        return Sum(tuple((float(other) * w, t) for w, t in self.terms()))

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Objective:
        if not _is_scalar(other) or float(other) == 0.0:
            raise TypeError(f"An objective can only be divided by a nonzero real number; got {other!r}.")
        return self * (1.0 / float(other))

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: object) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __repr__(self) -> str:
        parts = []
        for w, t in self.terms():
            sign = "-" if w < 0 else "+"
            body = repr(t) if abs(w) == 1.0 else f"{abs(w):g} * {t!r}"
            parts.append(f"{sign} {body}")
        if not parts:
            return "Sum()"
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]


class Sum(Objective):
    """A weighted sum of terms (what ``+``, ``-`` and ``*`` build)."""

    def __init__(self, terms: tuple[tuple[float, Term], ...]) -> None:
        self._terms = tuple(terms)

    def terms(self) -> tuple[tuple[float, Term], ...]:
        return self._terms

    def __call__(self, ctx: Context):
        if not self._terms:
            return torch.zeros(len(ctx.image), device=ctx.image.device)
        return super().__call__(ctx)


class Term(Objective):
    """One objective term; ``kind`` is ``"scores"``, ``"layer"`` or ``"image"``."""

    kind = "image"
    layer: str | None = None

    def terms(self) -> tuple[tuple[float, Term], ...]:
        return ((1.0, self),)

    def value(self, ctx: Context):
        """The term per image, ``(n,)``."""
        raise NotImplementedError

    def _args(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._args()})"

    def activation(self, ctx: Context):
        """The recorded output of this term's layer."""
        return ctx.layers[self.layer]


def _check_index(value: object, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"The {name!r} parameter of {owner} must be an int >= 0. Got {value!r} instead.")
    return int(value)


def _check_layer(layer: object, owner: str) -> str:
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"The 'layer' parameter of {owner} must be a module name as in "
                        f"module.named_modules(), e.g. 'features.6'. Got {layer!r} instead.")
    return layer


def _in_range(index: int, size: int, name: str, owner: str, what: str) -> None:
    if index >= size:
        raise ValueError(f"The {name!r} parameter of {owner} must be in [0, {size - 1}]: {what} has {size}. "
                         f"Got {index} instead.")


def probabilities(logits, log: bool = False):
    """Class probabilities ``(n, K)`` of a model output; rows that already are probabilities are kept.

    Rows that are non-negative and sum to 1 (within 1e-4) are taken as probabilities (a
    model that ends with a softmax); anything else gets a softmax over the class axis.
    """
    with torch.no_grad():
        is_probs = bool(((logits >= 0).all() & ((logits.sum(dim=1) - 1).abs() < 1e-4).all()).item())
    if is_probs:
        return logits.clamp_min(1e-30).log() if log else logits
    return torch.log_softmax(logits, dim=1) if log else torch.softmax(logits, dim=1)


class _ClassTerm(Term):
    kind = "scores"

    def __init__(self, target: int) -> None:
        self.target = _check_index(target, "target", type(self).__name__)

    def _args(self) -> str:
        return str(self.target)

    def _column(self, scores):
        _in_range(self.target, scores.shape[1], "target", type(self).__name__, "the model's output (classes)")
        return scores[:, self.target]


class ClassLogit(_ClassTerm):
    """The model's output for class ``target`` (Simonyan et al. 2014's class model objective).

    For a ``Torch`` model this is the module's output (the logit, before the adapter's
    softmax); for a black box, the adapter's score as the model returns it.
    """

    def value(self, ctx: Context):
        return self._column(ctx.logits)


class ClassProbability(_ClassTerm):
    """Softmax probability of class ``target`` (its log with ``log=True``).

    Parameters
    ----------
    target : int
    log : bool, default False
        Use ``log p`` (the log-softmax), which keeps a useful gradient as ``p -> 1``.
    """

    def __init__(self, target: int, *, log: bool = False) -> None:
        super().__init__(target)
        self.log = bool(log)

    def _args(self) -> str:
        return f"{self.target}, log=True" if self.log else str(self.target)

    def value(self, ctx: Context):
        return self._column(probabilities(ctx.logits, self.log))


def _check_activation(act, owner: str, layer: str, allow_2d: bool = True):
    if act.ndim == 4 or (allow_2d and act.ndim == 2):
        return act
    need = "(N, C, h, w) or (N, C)" if allow_2d else "(N, C, h, w)"
    raise ValueError(f"{owner} needs layer {layer!r} to return {need}; it returned shape {tuple(act.shape)}.")


class Channel(Term):
    """Mean activation of one channel of a layer, over all positions (one unit for an ``(N, C)`` layer).

    On a ReLU's output, a channel that is off at every position of the initial image has no
    gradient and the run cannot move (a RuntimeWarning says so); visualise the layer
    before the ReLU instead (the pre-activation, as Lucid's ``*_pre_relu`` layers).
    """

    kind = "layer"

    def __init__(self, layer: str, channel: int) -> None:
        self.layer = _check_layer(layer, "Channel")
        self.channel = _check_index(channel, "channel", "Channel")

    def _args(self) -> str:
        return f"{self.layer!r}, {self.channel}"

    def value(self, ctx: Context):
        act = _check_activation(self.activation(ctx), "Channel", self.layer)
        _in_range(self.channel, act.shape[1], "channel", "Channel", f"layer {self.layer!r} (channels)")
        chosen = act[:, self.channel]
        return chosen.flatten(1).mean(dim=1) if chosen.ndim > 1 else chosen


class Neuron(Term):
    """Activation of one channel at one position ``(y, x)`` of a layer's map (the centre by default)."""

    kind = "layer"

    def __init__(self, layer: str, channel: int, y: int | None = None, x: int | None = None) -> None:
        self.layer = _check_layer(layer, "Neuron")
        self.channel = _check_index(channel, "channel", "Neuron")
        self.y = None if y is None else _check_index(y, "y", "Neuron")
        self.x = None if x is None else _check_index(x, "x", "Neuron")

    def _args(self) -> str:
        return f"{self.layer!r}, {self.channel}, y={self.y}, x={self.x}"

    def value(self, ctx: Context):
        act = _check_activation(self.activation(ctx), "Neuron", self.layer, allow_2d=False)
        _, c, h, w = act.shape
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        _in_range(self.channel, c, "channel", "Neuron", f"layer {self.layer!r} (channels)")
        _in_range(y, h, "y", "Neuron", f"layer {self.layer!r} (rows)")
        _in_range(x, w, "x", "Neuron", f"layer {self.layer!r} (columns)")
        return act[:, self.channel, y, x]


class Direction(Term):
    """Alignment of a layer's activation vectors with a direction, averaged over positions.

    Parameters
    ----------
    layer : str
    vector : array-like, shape (C,)
        A direction in the layer's channel space.
    cosine : bool, default True
        Cosine similarity at each position (as lucent's ``direction``); False: the dot
        product with the unit vector (rewards large activations along it too).
    """

    kind = "layer"

    def __init__(self, layer: str, vector, *, cosine: bool = True) -> None:
        self.layer = _check_layer(layer, "Direction")
        v = np.asarray(vector, dtype=np.float64)
        if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)) or not np.any(v):
            raise ValueError(f"The 'vector' parameter of Direction must be a finite, nonzero 1-D array (one "
                             f"value per channel). Got shape {v.shape}.")
        self.vector = v
        self.cosine = bool(cosine)

    def _args(self) -> str:
        return f"{self.layer!r}, <{self.vector.size} channels>, cosine={self.cosine}"

    def value(self, ctx: Context):
        act = _check_activation(self.activation(ctx), "Direction", self.layer)
        if act.shape[1] != self.vector.size:
            raise ValueError(f"The 'vector' parameter of Direction has {self.vector.size} values but layer "
                             f"{self.layer!r} has {act.shape[1]} channels.")
        v = torch.as_tensor(self.vector / np.linalg.norm(self.vector), dtype=act.dtype, device=act.device)
        shape = (1, -1) + (1,) * (act.ndim - 2)
        dots = (act * v.reshape(shape)).sum(dim=1)
        if self.cosine:
            dots = dots / act.norm(dim=1).clamp_min(1e-8)
        return dots.flatten(1).mean(dim=1) if dots.ndim > 1 else dots


class Diversity(Term):
    """Minus the similarity of each image's Gram matrix to the others' (Olah et al. 2017).

    The Gram matrix ``G_i = A_i A_i^T / ||A_i A_i^T||`` of image i's activations ``A_i``
    ``(C, positions)`` at ``layer`` (the image's pixels with ``layer=None``) is compared to
    every other image's of the batch by the inner product (cosine similarity of Gram
    matrices); the term is ``-mean_{j != i} <G_i, G_j>`` per image, so a batch scores
    higher when its members differ in style. Zero for a batch of one. Summed over the
    batch this is ``(n / (n - 1))`` times lucent's ``diversity``.
    """

    def __init__(self, layer: str | None = None) -> None:
        self.layer = None if layer is None else _check_layer(layer, "Diversity")
        self.kind = "image" if layer is None else "layer"

    def _args(self) -> str:
        return "" if self.layer is None else repr(self.layer)

    def value(self, ctx: Context):
        act = ctx.image if self.layer is None else _check_activation(self.activation(ctx), "Diversity", self.layer,
                                                                     allow_2d=False)
        n = act.shape[0]
        if n < 2:
            return act.new_zeros(n)
        flat = act.flatten(2)
        gram = flat @ flat.transpose(1, 2)
        gram = gram / gram.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        sim = torch.einsum("iab,jab->ij", gram, gram)
        off = sim.sum(dim=1) - sim.diagonal()
        return -off / (n - 1)


class TotalVariation(Term):
    """Total variation of the image, ``mean_{c,u} (dx^2 + dy^2)^(beta / 2)`` per image.

    Mahendran & Vedaldi's ``R_{V^beta}`` with forward differences, averaged over the
    ``(H - 1)(W - 1)`` positions and the channels (so the weight does not depend on the
    image size). A penalty: subtract it, ``objective - weight * TotalVariation()``.

    Parameters
    ----------
    beta : float, default 2.0
        Exponent; ``beta = 1`` is the classical total variation, ``beta > 1`` removes spikes
        without favouring piecewise-constant images as strongly.
    """

    def __init__(self, beta: float = 2.0) -> None:
        if not _is_scalar(beta) or beta <= 0:
            raise ValueError(f"The 'beta' parameter of TotalVariation must be a real number > 0. Got {beta!r}.")
        self.beta = float(beta)

    def _args(self) -> str:
        return f"beta={self.beta:g}"

    def value(self, ctx: Context):
        return total_variation(ctx.image, self.beta)


def total_variation(images, beta: float = 2.0):
    """``mean_{c,u} (dx^2 + dy^2)^(beta/2)`` of ``images`` ``(n, C, H, W)``, ``(n,)`` (forward differences)."""
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    sq = dx * dx + dy * dy
    if beta != 2.0:
        sq = sq.clamp_min(1e-12).pow(beta / 2.0)
    return sq.flatten(1).mean(dim=1)


class AlphaNorm(Term):
    """``mean |x - center|^alpha`` over the image's pixels and channels (Mahendran & Vedaldi's alpha-norm).

    A penalty (subtract it): large ``alpha`` (6 in the paper) keeps the values in range
    without pulling moderate ones towards ``center``; ``alpha = 2`` is the L2 norm.

    Parameters
    ----------
    alpha : float, default 6.0
    center : float, default 0.5
        The value the norm is taken around (mid-grey for images in [0, 1]).
    """

    def __init__(self, alpha: float = 6.0, center: float = 0.5) -> None:
        if not _is_scalar(alpha) or alpha < 1:
            raise ValueError(f"The 'alpha' parameter of AlphaNorm must be a real number >= 1. Got {alpha!r}.")
        if not _is_scalar(center):
            raise ValueError(f"The 'center' parameter of AlphaNorm must be a real number. Got {center!r}.")
        self.alpha, self.center = float(alpha), float(center)

    def _args(self) -> str:
        return f"alpha={self.alpha:g}, center={self.center:g}"

    def value(self, ctx: Context):
        return (ctx.image - self.center).abs().pow(self.alpha).flatten(1).mean(dim=1)


class Match(Term):
    """Minus the squared relative distance of a layer's output to a target representation.

    ``-||phi(x) - phi_0||^2 / ||phi_0||^2`` per image (Mahendran & Vedaldi's reconstruction
    loss, negated to be maximised); :class:`~perturbx.visualize.PreImage` maximises it.

    Parameters
    ----------
    layer : str
    target : array-like
        ``phi_0``: the layer's output for one sample (its shape without the batch axis),
        or one per image (with it).
    """

    kind = "layer"

    def __init__(self, layer: str, target) -> None:
        self.layer = _check_layer(layer, "Match")
        t = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        t = t.astype(np.float32)
        if t.size == 0 or not np.all(np.isfinite(t)) or not np.any(t):
            raise ValueError(f"The 'target' parameter of Match must be a finite, nonzero array (the layer's "
                             f"output for the sample to invert). Got shape {t.shape}.")
        self.target = t

    def _args(self) -> str:
        return f"{self.layer!r}, <target {self.target.shape}>"

    def relative_error(self, ctx: Context):
        """``||phi(x) - phi_0|| / ||phi_0||`` per image, ``(n,)``."""
        return (-self.value(ctx)).clamp_min(0).sqrt()

    def value(self, ctx: Context):
        act = self.activation(ctx)
        target = torch.as_tensor(self.target, device=act.device, dtype=act.dtype)
        if target.shape != act.shape[1:] and target.shape != act.shape:
            raise ValueError(f"The 'target' parameter of Match has shape {tuple(target.shape)} but layer "
                             f"{self.layer!r} returns {tuple(act.shape[1:])} per image.")
        if target.shape != act.shape:
            target = target.expand_as(act)
        diff = (act - target).flatten(1).pow(2).sum(dim=1)
        return -diff / target.flatten(1).pow(2).sum(dim=1)


def check_objectives(objective: object, owner: str) -> list[Objective]:
    """``objective`` (one, or a non-empty sequence of them) as a list of objectives."""
    items = [objective] if isinstance(objective, Objective) else objective
    if isinstance(items, (list, tuple)) and items and all(isinstance(o, Objective) for o in items):
        return list(items)
    raise TypeError(f"The 'objective' parameter of {owner} must be an objective (ClassLogit(2), "
                    f"Channel('features.6', 3), ...) or a non-empty list of them. Got {objective!r} instead.")
