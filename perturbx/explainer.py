"""What every explainer shares: one ``explain()`` for black-box, mask-optimisation and gradient methods.

:meth:`Explainer.explain` validates the sample, makes the reference query (the model's
output for the unperturbed input), binds the target to it (:mod:`perturbx.targets`),
works out the query budget and builds the :class:`~perturbx.Explanation`; a family of
methods supplies one hook, :meth:`Explainer._explain`, that turns a :class:`Request`
into attributions. The black-box family (``perturbx.explainers``) runs the engine there,
the mask-optimisation family (``perturbx.optimize``) an optimiser, the gradient family
(``perturbx.gradients``) batched backward passes.
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perturbx._utils import Configurable, check_random_state
from perturbx.adapters import Adapter, as_adapter
from perturbx.adapters.base import slice_rows
from perturbx.explanation import Explanation
from perturbx.targets import BindInfo, Target, as_target, bind


@dataclass
class Request:
    """One ``explain`` call, as a method family sees it.

    Attributes
    ----------
    x : ndarray, shape ``sample_shape``
        The validated sample in the model's layout (float, finite).
    adapter : Adapter
    target : Target
        The bound target: ``target.scores(outputs)`` gives ``(n, T)``.
    reference : ndarray (T,)
        The target's scalars for the unperturbed input.
    output : object
        The model's raw output for the unperturbed input (a batch of one row, numpy).
    rng : numpy Generator
        From the explainer's ``random_state``.
    budget : int or None
        Model queries left after the reference query (None: no ``max_queries``).
    """

    x: np.ndarray
    adapter: Adapter
    target: Target
    reference: np.ndarray
    output: object
    rng: np.random.Generator
    budget: int | None

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W) of the sample."""
        return self.adapter.layout.spatial_shape(self.x.shape)


class Explainer(Configurable, ABC):
    """Base of every explainer: ``explain(model, x, target)`` returning an :class:`~perturbx.Explanation`.

    A family overrides :meth:`_explain` and, where it differs, :meth:`_adapter` (which
    models it accepts), :meth:`_check_sample`, :meth:`_check_target` and
    :meth:`_default_target`. Parameters named ``random_state`` and ``max_queries`` are
    used when the explainer has them.
    """

    def _adapter(self, model: object) -> Adapter:
        """The model as an adapter (a bare model is wrapped with defaults)."""
        return as_adapter(model)

    def _check_sample(self, adapter: Adapter, x: object) -> np.ndarray:
        """``x`` validated for ``adapter`` (one sample, no batch axis)."""
        return adapter.check_sample(x)

    def _default_target(self) -> object:
        """What ``target=None`` means: the top class (``Class(None)``) unless a method says otherwise."""
        return None

    def _check_target(self, target: Target) -> None:
        """Refuse, before any query, a target this family cannot explain (e.g. a non-differentiable one)."""

    def _prepare_target(self, target: Target) -> Target:
        """The target this method explains for the one asked for (e.g. a class's log-odds); the same by default."""
        return target

    @abstractmethod
    def _explain(self, request: Request) -> tuple[np.ndarray, dict[str, Any]]:
        """Attributions ``(T, H, W)`` (or ``(T, C, H, W)`` per channel) and the method's extras."""

    def explain(self, model: object, x: np.ndarray, target: object = None) -> Explanation:
        """Explain the model's output for one sample.

        Parameters
        ----------
        model : Adapter, torch.nn.Module or callable
            A :mod:`perturbx.adapters` adapter, or a bare model wrapped with defaults.
        x : ndarray
            One sample in the adapter's ``input_layout``, without a batch axis.
        target : None, int, sequence of int, Target or callable
            What to explain (:mod:`perturbx.targets`): None is the model's top class (or the
            method's default, e.g. every detection for :class:`~perturbx.DRISE`), an int or
            a list of ints are classes, a target object reads any other output.

        Returns
        -------
        Explanation
            ``attributions`` of shape (H, W) for one scalar asked for as such (None, an int,
            one box ...), (T, H, W) for several; ``target`` the bound target.
        """
        start = time.perf_counter()
        adapter = self._adapter(model)
        x = self._check_sample(adapter, x)
        before = adapter.n_queries
        request = self._requests(adapter, [x], [target])[0]
        maps, extras = self._explain(request)
        return self._explanation(request, maps, extras, adapter.n_queries - before, time.perf_counter() - start)

    def explain_many(self, model: object, X: object, targets: object = None) -> list[Explanation]:
        """Explain several samples; each result equals ``explain(model, X[i], targets[i])`` with the same seed.

        Sampling methods (Occlusion, RISE, D-RISE, LIME, KernelSHAP, Shapley sampling) share
        model batches between the samples: the reference queries go out as one batch, and the
        perturbations of several samples fill the same model calls (:func:`perturbx.engine.run_many`),
        so a cheap model with small inputs sees full batches however few perturbations each
        sample has. Other methods explain the samples one after the other. With an int (or
        None) ``random_state`` each sample gets the stream ``explain`` would give it; with a
        ``numpy.random.Generator`` the samples are explained one after the other, drawing from
        it in order, as successive ``explain`` calls would.

        Parameters
        ----------
        model : Adapter, torch.nn.Module or callable
        X : ndarray (N, *sample_shape) or sequence of samples
        targets : None or a sequence of N targets
            One ``target`` per sample (anything ``explain`` takes); None: the default target
            for every sample. To explain the same classes of every sample pass ``[t] * N``.

        Returns
        -------
        list of Explanation
            ``n_queries`` of each counts its own rows; ``seconds`` is the call's wall time
            divided among the samples in proportion to their queries.
        """
        adapter = self._adapter(model)
        xs = [self._check_sample(adapter, x) for x in _samples(X)]
        wanted = [None] * len(xs) if targets is None else list(targets)
        if len(wanted) != len(xs):
            raise ValueError(f"The 'targets' argument of explain_many must give one target per sample ({len(xs)}). "
                             f"Got {len(wanted)}; pass [target] * N to explain the same target of every sample.")
        if isinstance(getattr(self, "random_state", None), np.random.Generator) or not self._shares_batches():
            return [self.explain(adapter, x, t) for x, t in zip(xs, wanted, strict=True)]
        return self._explain_many(adapter, xs, wanted)

    def _shares_batches(self) -> bool:
        """Whether :meth:`_explain_many` packs several samples into model batches (the default explains each)."""
        return False

    def _explain_many(self, adapter: Adapter, xs: list[np.ndarray], targets: list[object]) -> list[Explanation]:
        """Several samples at once; the family's hook (default: one :meth:`explain` after the other)."""
        return [self.explain(adapter, x, t) for x, t in zip(xs, targets, strict=True)]

    def _requests(self, adapter: Adapter, xs: list[np.ndarray], targets: list[object]) -> list[Request]:
        """Validate the targets, make the reference queries (one batch of the samples), bind the targets."""
        wanted = [self._prepare_target(as_target(self._default_target() if t is None else t)) for t in targets]
        for w in wanted:
            self._check_target(w)
        outputs = _reference_outputs(adapter, xs)
        max_queries = getattr(self, "max_queries", None)
        requests = []
        for x, w, output in zip(xs, wanted, outputs, strict=True):
            bound, reference = bind(w, output, BindInfo(adapter.layout.spatial_shape(x.shape), adapter._model_name()))
            requests.append(Request(x, adapter, bound, reference, output,
                                    check_random_state(getattr(self, "random_state", None)),
                                    None if max_queries is None else max_queries - 1))
        return requests

    def _explanation(self, request: Request, maps: np.ndarray, extras: dict[str, Any], n_queries: int,
                     seconds: float) -> Explanation:
        """The :class:`~perturbx.Explanation` of one request from its maps ``(T, ...)`` and extras."""
        bound = request.target
        if maps.ndim == 4:  # per-channel attributions: keep them, report their sum
            extras["channel_attributions"] = maps[0] if bound.single else maps
            maps = maps.sum(axis=1)
        return Explanation(
            attributions=maps[0] if bound.single else maps, targets=bound.labels, n_queries=n_queries,
            seconds=seconds, method=type(self).__name__, params=self.get_params(), scores=request.reference,
            input=request.x, input_layout=request.adapter.layout.name, extras=extras, target=bound)


def _samples(X: object) -> list:
    if isinstance(X, np.ndarray) or (isinstance(X, (list, tuple)) and not isinstance(X, str)):
        items = list(X)
        if items:
            return items
        raise ValueError("The 'X' argument of explain_many is empty; pass at least one sample.")
    raise TypeError(f"The 'X' argument of explain_many must be an array (N, *sample_shape) or a sequence of samples. "
                    f"Got {type(X).__name__}.")


def _reference_outputs(adapter: Adapter, xs: list[np.ndarray]) -> list[object]:
    """The reference query of every sample: one model call per ``batch_size`` samples, split back per sample.

    A batch the model fails on is asked again sample by sample, so the error names the sample.
    """
    if len(xs) == 1:
        return [_reference_output(adapter, xs[0])]
    outputs: list[object] = []
    for lo in range(0, len(xs), adapter.batch_size):
        part = xs[lo:lo + adapter.batch_size]
        try:
            raw = adapter.predict_raw(adapter.backend.asarray(np.stack(part), adapter.dtype))
        except Exception:
            outputs += [_reference_output(adapter, x) for x in part]
            continue
        outputs += [slice_rows(raw, i, i + 1) for i in range(len(part))]
    return outputs


def _reference_output(adapter: Adapter, x: np.ndarray) -> object:
    """The model's raw output for ``x`` (a batch of one): the reference query.

    An exception raised by the model's own code (torch's shape errors, a function that
    cannot take ``x``) becomes a ValueError that names ``x``, its shape, the adapter's
    layout and batch size, with the model's exception as ``__cause__``; perturbx's own
    errors (a malformed output, a server that gave up, the query budget) pass unchanged.
    """
    try:
        return adapter.predict_raw(adapter.backend.asarray(x[None], adapter.dtype))
    except Exception as exc:
        if _raised_by_perturbx(exc):
            raise
        declared = "" if adapter.sample_shape is None else f", which declares samples of shape {adapter.sample_shape}"
        raise ValueError(
            f"The model failed on x of shape {tuple(x.shape)} (the first query: x alone, as a batch of 1; later "
            f"batches hold up to batch_size={adapter.batch_size} rows) given through {type(adapter).__name__} with "
            f"input_layout={adapter.layout.name!r}{declared}. Check that x has the shape, channel order and value "
            f"range the model takes. The model said: {type(exc).__name__}: {exc}") from exc


def _raised_by_perturbx(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is perturbx's own code (perturbx/ or the adapters).

    An adapter's ``_forward`` calling a model written in C (a numpy or math function) is that
    frame too; an exception of a type perturbx does not define is the model's there.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    if tb.tb_frame.f_code.co_name == "_forward" and not type(exc).__module__.startswith("perturbx"):
        return False
    where = Path(tb.tb_frame.f_code.co_filename).resolve()
    roots = {Path(__file__).resolve().parent, Path(sys.modules[Adapter.__module__].__file__).resolve().parent}
    return any(root in where.parents for root in roots)
