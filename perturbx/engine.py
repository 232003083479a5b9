"""The one loop that drives every black-box method.

sampler (mask chunks) -> renderer (perturbed batch on the model's backend) ->
adapter (batched predict) -> estimator (streaming fold). Chunks are as large as the
adapter's batch size, so nothing ever holds more than one chunk of masks or of
perturbed inputs, whatever the number of perturbations.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from .estimators.base import Estimator
from .renderers.base import Renderer
from .samplers.base import Sampler


class QueryBudgetError(RuntimeError):
    """Raised when an explanation would need more model queries than ``max_queries`` allows."""


@dataclass
class Plan:
    """The three method-specific parts of a black-box explanation."""

    sampler: Sampler
    renderer: Renderer
    estimator: Estimator


def progress_enabled(progress: bool | None) -> bool:
    """``progress=None`` means: show a bar only when stderr is a terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def run(plan: Plan, adapter, targets: np.ndarray, *, budget: int | None = None,
        progress: bool | None = None, desc: str = "perturbx") -> int:
    """Stream every chunk of ``plan.sampler`` through the model into ``plan.estimator``.

    Parameters
    ----------
    plan : Plan
    adapter : perturbx.adapters.Adapter
    targets : ndarray of int, shape (T,)
        Columns of the model's scores passed to the estimator.
    budget : int, optional
        Queries this run may still make; exceeding it raises before the model is called.
    progress : bool or None
        Show a tqdm bar (None: only on a terminal).
    desc : str
        Label of the progress bar.

    Returns
    -------
    int
        Model queries made.
    """
    total = plan.sampler.n_total
    if budget is not None and total > budget:
        raise QueryBudgetError(f"{desc} needs {total} perturbed queries but only {budget} are left "
                                  f"of max_queries; raise max_queries or lower the number of perturbations.")
    backend, dtype = adapter.backend, adapter.dtype
    done = 0
    with _progress_bar(total, progress, desc) as bar:
        for chunk in plan.sampler.chunks(adapter.batch_size):
            masks = chunk.materialize(backend, dtype)
            scores = adapter.predict_batch(plan.renderer.render(masks))
            plan.estimator.update(chunk, masks, scores[:, targets])
            done += chunk.size
            bar.update(chunk.size)
    return done


def _progress_bar(total: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="query", disable=not progress_enabled(progress), leave=False)
