"""One gradient explanation: the adapter, the sample on its device, targets, and the batched backward loop.

:func:`run_gradients` is the one loop every gradient method uses: it builds rows chunk by
chunk (at most ``batch_size`` rows, so memory is bounded), runs the module forward with
autograd on, takes the gradient of each row's target score with respect to the rows (or
to a layer's output) in one backward pass per chunk, and hands each chunk's gradients to
the method. Every forward row is counted in ``adapter.n_queries``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
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
    when a layer was captured (``act`` is None otherwise).
    """

    lo: int
    hi: int
    rows: torch.Tensor
    grad: torch.Tensor
    act: torch.Tensor | None = None


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
                  relu_rule: ReluRule | None = None, batch_size: int | None = None) -> None:
    """Gradients of ``n_rows`` rows, ``batch_size`` (default: the adapter's) rows per backward pass.

    Parameters
    ----------
    session : Session
    n_rows : int
    make_rows : callable (lo, hi) -> Tensor (hi - lo, *sample_shape)
        Builds rows ``lo:hi`` on the device.
    target_index : LongTensor (n_rows,)
        For each row, the position among the target's ``T`` scalars of the one to differentiate.
    consume : callable (Chunk) -> None
        Receives each chunk's gradients.
    layer : (module, name), optional
        Differentiate with respect to this layer's output instead of the rows.
    relu_rule : optional
        Rewrite ReLU gradients with this rule while the loop runs.
    """
    step = batch_size or session.adapter.batch_size
    with ExitStack() as hooks:
        record = hooks.enter_context(capture_layer(*layer)) if layer is not None else None
        if relu_rule is not None:
            hooks.enter_context(modified_relu_gradients(session.module, relu_rule))
        for lo in range(0, n_rows, step):
            hi = min(lo + step, n_rows)
            rows = make_rows(lo, hi).detach().requires_grad_(True)
            values = session.forward(rows)
            selected = values.gather(1, target_index[lo:hi, None].to(values.device)).sum()
            if record is None:
                (grad,) = torch.autograd.grad(selected, rows)
                consume(Chunk(lo, hi, rows.detach(), grad))
            else:
                act = record.take()
                (grad,) = torch.autograd.grad(selected, act)
                consume(Chunk(lo, hi, rows.detach(), grad, act.detach()))
