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

from perturbx._utils import normalise_targets
from perturbx.adapters import Adapter, Torch

from ._hooks import ReluRule, capture_layer, modified_relu_gradients

_MANY_CLASSES = 2**62  # stands in for the (still unknown) number of classes while checking target types


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


def count_targets(target: object) -> int:
    """Number of targets ``target`` asks for; checks its type now, the class range later."""
    try:
        targets, _ = normalise_targets(target, _MANY_CLASSES, 0)
    except ValueError:  # a negative index: reported with the real class count once it is known
        return len(np.atleast_1d(np.asarray(target)))
    return len(targets)


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
    n_targets : int
    targets : ndarray of int (T,) or None until known; ``targets_t`` the same on the device
    scores : ndarray (n_classes,) or None until known; the model's scores of ``x``
    single : bool, True when one target was asked for as None or an int
    memo : dict, per-call values a method keeps between its steps
    """

    def __init__(self, adapter: Torch, x: np.ndarray, target: object) -> None:
        self.adapter = adapter
        self.module = adapter.module
        self.layout = adapter.layout
        self.x = x
        self.xt = torch.as_tensor(x, dtype=torch.float32, device=adapter.device)
        self.target = target
        self.n_targets = count_targets(target)
        self.targets: np.ndarray | None = None
        self.targets_t: torch.Tensor | None = None
        self.scores: np.ndarray | None = None
        self.single = True
        self.memo: dict[str, Any] = {}

    def resolve(self, scores: np.ndarray) -> None:
        """Fix the targets from the model's scores of ``x`` (None means its top class)."""
        self.targets, self.single = normalise_targets(self.target, len(scores), int(np.argmax(scores)))
        self.targets_t = torch.as_tensor(self.targets, dtype=torch.long, device=self.adapter.device)
        self.scores = scores

    def ensure_targets(self) -> None:
        """Resolve the targets with one plain forward row of ``x`` unless they are known."""
        if self.targets is None:
            self.resolve(self.scores_of(self.xt[None])[0])

    def scores_of(self, batch: torch.Tensor) -> np.ndarray:
        """Scores ``(n, n_classes)`` of a batch without autograd (counted as queries)."""
        return self.adapter.predict_batch(batch.detach())

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """Module output ``(n, n_classes)`` with autograd, and its validated numpy copy."""
        out = self.module(rows)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"The torch module returned {type(out).__name__}; it must return a tensor of "
                            f"scores (n, n_classes).")
        if out.ndim == 2 and self.adapter.output == "probs":
            out = torch.softmax(out, dim=1)
        self.adapter.n_queries += len(rows)
        scores = self.adapter._check_scores(out.detach().to("cpu", torch.float64).numpy(), len(rows))
        return out, scores


def run_gradients(session: Session, n_rows: int, make_rows: Callable[[int, int], torch.Tensor],
                  target_index: torch.Tensor, consume: Callable[[Chunk], None], *,
                  first_is_x: bool = False, layer: tuple[torch.nn.Module, str] | None = None,
                  relu_rule: ReluRule | None = None, batch_size: int | None = None) -> None:
    """Gradients of ``n_rows`` rows, ``batch_size`` (default: the adapter's) rows per backward pass.

    Parameters
    ----------
    session : Session
    n_rows : int
    make_rows : callable (lo, hi) -> Tensor (hi - lo, *sample_shape)
        Builds rows ``lo:hi`` on the device.
    target_index : LongTensor (n_rows,)
        For each row, the position in ``session.targets`` of the class to differentiate.
    consume : callable (Chunk) -> None
        Receives each chunk's gradients.
    first_is_x : bool
        Row 0 is the unperturbed sample: its scores resolve the targets, no extra query.
    layer : (module, name), optional
        Differentiate with respect to this layer's output instead of the rows.
    relu_rule : optional
        Rewrite ReLU gradients with this rule while the loop runs.
    """
    if not first_is_x:
        session.ensure_targets()
    step = batch_size or session.adapter.batch_size
    with ExitStack() as hooks:
        record = hooks.enter_context(capture_layer(*layer)) if layer is not None else None
        if relu_rule is not None:
            hooks.enter_context(modified_relu_gradients(session.module, relu_rule))
        for lo in range(0, n_rows, step):
            hi = min(lo + step, n_rows)
            rows = make_rows(lo, hi).detach().requires_grad_(True)
            out, scores = session.forward(rows)
            if session.targets is None:
                session.resolve(scores[0])
            classes = session.targets_t[target_index[lo:hi]]
            selected = out.gather(1, classes[:, None]).sum()
            if record is None:
                (grad,) = torch.autograd.grad(selected, rows)
                consume(Chunk(lo, hi, rows.detach(), grad))
            else:
                act = record.take()
                (grad,) = torch.autograd.grad(selected, act)
                consume(Chunk(lo, hi, rows.detach(), grad, act.detach()))
