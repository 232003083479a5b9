"""One gradient explanation: the adapter, the sample on its device, targets, and the batched backward loop.

:func:`run_gradients` is the one loop every gradient method uses: it builds rows chunk by
chunk (at most ``batch_size`` rows, so memory is bounded), runs the module forward with
autograd on, takes the gradient of each row's target score with respect to the rows (or
to a layer's output) in one backward pass per chunk, and hands each chunk's gradients to
the method. Every forward row is counted in ``adapter.n_queries``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perturbx.adapters import Adapter, Torch
from perturbx.targets import Target, check_target_values

from ._hooks import ReluRule, capture_layer, modified_relu_gradients


def torch_adapter(model: object, owner: str) -> Torch:
    """``model`` as a :class:`perturbx.adapters.Torch` (a bare ``nn.Module`` is wrapped with defaults)."""
    if isinstance(model, Torch):
        return model
    if isinstance(model, torch.nn.Module):
        return Torch(model)
    kind = f"a {type(model).__name__} adapter" if isinstance(model, Adapter) else f"a {type(model).__name__}"
    raise TypeError(f"{owner} differentiates the model, so gradient methods need adapters.Torch (or a "
                    f"torch.nn.Module); got {kind}. Wrap the module as perturbx.adapters.Torch(module), or "
                    f"use a black-box explainer (perturbx.Occlusion, perturbx.RISE) for other models.")


@dataclass
class Chunk:
    """Rows ``lo:hi`` of one batched backward pass.

    ``rows`` (n, *sample_shape) are the inputs; ``grad`` is the gradient of each row's
    target score with respect to ``rows``, or to the layer output ``act`` (n, C, h, w)
    when a layer was captured (``act`` is None otherwise). ``neuron_grad`` (n, *sample_shape)
    is the gradient of the selected neuron of ``act`` with respect to ``rows`` when a
    neuron was asked for. With ``rows_per_item = k``, items ``lo:hi`` own ``k (hi - lo)`` rows.
    """

    lo: int
    hi: int
    rows: torch.Tensor
    grad: torch.Tensor
    act: torch.Tensor | None = None
    neuron_grad: torch.Tensor | None = None


class Session:
    """The state of one ``explain`` call.

    Attributes
    ----------
    adapter : Torch
    x : ndarray, the validated sample; ``xt`` the same on the adapter's device (float32)
    target : Target, bound and differentiable (:mod:`perturbx.targets`)
    reference : ndarray (T,), the target's scalars for ``x``
    n_targets : int, ``T``
    memo : dict, per-call values a method keeps between its steps
    create_graph : bool, False unless a caller differentiates the attributions themselves
        (:mod:`perturbx.metrics.trust`); then rows keep their graph to the sample
    """

    def __init__(self, adapter: Torch, x: np.ndarray, target: Target, reference: np.ndarray) -> None:
        self.adapter = adapter
        self.module = adapter.module
        self.layout = adapter.layout
        self.x = x
        self.xt = torch.as_tensor(x, dtype=torch.float32, device=adapter.device)
        self.target = target
        self.reference = np.asarray(reference, dtype=np.float64)
        self.n_targets = len(self.reference)
        self.memo: dict[str, Any] = {}
        #: keep the autograd graph of the attributions (second-order use: attacks on the map)
        self.create_graph = False

    def values_of(self, batch: torch.Tensor) -> np.ndarray:
        """The target's scalars ``(n, T)`` of a batch without autograd (counted as queries)."""
        return self.adapter.predict_target(batch.detach(), self.target)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """The target's scalars ``(n, T)`` of ``rows`` with autograd (every row counted as a query)."""
        out = self.adapter._postprocess(self.module(rows))
        self.adapter.n_queries += len(rows)
        values = self.target.torch_scores(out)
        check_target_values(values.detach().to("cpu", torch.float64).numpy(), len(rows), self.n_targets,
                            self.target)
        return values


def run_gradients(session: Session, n_rows: int, make_rows: Callable[[int, int], torch.Tensor],
                  target_index: torch.Tensor, consume: Callable[[Chunk], None], *,
                  layer: tuple[torch.nn.Module, str] | None = None,
                  relu_rule: ReluRule | None = None, batch_size: int | None = None,
                  hooks: Callable[[], AbstractContextManager] | None = None, rows_per_item: int = 1,
                  seed_with_value: bool = False,
                  neuron: Callable[[torch.Tensor], torch.Tensor] | None = None, spatial_layer: bool = True) -> None:
    """Gradients of ``n_rows`` items, ``batch_size`` (default: the adapter's) rows per backward pass.

    Parameters
    ----------
    session : Session
    n_rows : int
        Items to differentiate (rows, or groups of ``rows_per_item`` rows).
    make_rows : callable (lo, hi) -> Tensor (rows_per_item * (hi - lo), *sample_shape)
        Builds the rows of items ``lo:hi`` on the device (for ``rows_per_item = k``: ``k``
        blocks of ``hi - lo`` rows, each block in item order).
    target_index : LongTensor (n_rows,)
        For each item, the position among the target's ``T`` scalars of the one to
        differentiate (every row of an item differentiates the same one).
    consume : callable (Chunk) -> None
        Receives each chunk's gradients.
    layer : (module, name), optional
        Differentiate with respect to this layer's output instead of the rows.
    relu_rule : optional
        Rewrite ReLU gradients with this rule while the loop runs.
    hooks : callable () -> context manager, optional
        Entered around the loop: a method's own backward rules (DeepLIFT, LRP).
    rows_per_item : int, default 1
        Rows each item owns in one forward pass (DeepLIFT: the input and its reference).
    seed_with_value : bool, default False
        Start the backward pass from each row's target value instead of 1 (LRP's
        relevance at the output is the score itself).
    neuron : callable (act) -> Tensor (n,), optional
        With ``layer``: also the gradient of ``neuron(act)`` with respect to the rows
        (neuron conductance), from the same forward pass.
    spatial_layer : bool, default True
        The layer's output must be ``(N, C, h, w)``; False accepts any tensor.
    """
    step = max(1, (batch_size or session.adapter.batch_size) // rows_per_item)
    with ExitStack() as stack:
        record = stack.enter_context(capture_layer(*layer, spatial_layer)) if layer is not None else None
        if relu_rule is not None:
            stack.enter_context(modified_relu_gradients(session.module, relu_rule))
        if hooks is not None:
            stack.enter_context(hooks())
        for lo in range(0, n_rows, step):
            hi = min(lo + step, n_rows)
            rows = make_rows(lo, hi)
            rows = rows if session.create_graph and rows.requires_grad else rows.detach().requires_grad_(True)
            values = session.forward(rows)
            index = target_index[lo:hi].to(values.device).repeat(rows_per_item)
            picked = values.gather(1, index[:, None])
            selected = (picked * picked.detach()).sum() if seed_with_value else picked.sum()
            _differentiate(session, Chunk(lo, hi, rows, rows), selected, record, neuron, consume)


def _differentiate(session: Session, chunk: Chunk, selected: torch.Tensor, record, neuron, consume) -> None:
    """One backward pass of a chunk (two with a neuron), handed to ``consume``."""
    graph = session.create_graph
    rows = chunk.rows
    if record is None:
        (grad,) = torch.autograd.grad(selected, rows, create_graph=graph)
        consume(Chunk(chunk.lo, chunk.hi, rows if graph else rows.detach(), grad))
        return
    act = record.take()
    (grad,) = torch.autograd.grad(selected, act, create_graph=graph, retain_graph=neuron is not None or graph)
    neuron_grad = None
    if neuron is not None:
        (neuron_grad,) = torch.autograd.grad(neuron(act).sum(), rows, create_graph=graph)
    consume(Chunk(chunk.lo, chunk.hi, rows if graph else rows.detach(), grad, act if graph else act.detach(),
                  neuron_grad))
