"""The one loop that drives every black-box method.

sampler (mask chunks) -> renderer (perturbed batch on the model's backend) ->
adapter (batched predict) -> target (model output -> scalars) -> estimator (streaming
fold). A chunk is one model batch, or a few for small inputs (at most ``RENDER_BYTES``
of perturbed inputs), so nothing ever holds more than one chunk of masks or of perturbed
inputs, whatever the number of perturbations.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import QueryBudgetError
from .estimators.base import Estimator, check_pairing
from .renderers.base import Renderer
from .renderers.buffers import BufferPool
from .samplers.base import Sampler
from .targets import Class, Target

#: most bytes of perturbed inputs rendered at once. For a cheap model with small inputs one
#: rendered chunk spans several model batches (at most ``MAX_BATCHES_PER_CHUNK``), so mask
#: generation, rendering and folding run as fewer, larger array operations; the model still
#: sees ``batch_size`` rows per call. Large inputs get one model batch per chunk.
RENDER_BYTES = 16 * 2 ** 20
MAX_BATCHES_PER_CHUNK = 16


__all__ = ["Plan", "QueryBudgetError", "RunResult", "Stopping", "predict_in_batches", "relative_error", "run",
           "run_many"]


@dataclass
class Plan:
    """The three method-specific parts of a black-box explanation.

    Built once per run; the sampler's chunks must carry what the estimator reads
    (:func:`perturbx.estimators.base.check_pairing`), else a TypeError is raised here,
    before any query.
    """

    sampler: Sampler
    renderer: Renderer
    estimator: Estimator

    def __post_init__(self) -> None:
        check_pairing(self.sampler, self.estimator)


@runtime_checkable
class ErrorEstimating(Protocol):
    """An estimator that can say how far its running estimate may be from its limit."""

    def standard_error(self) -> tuple[np.ndarray, np.ndarray]:
        """Current estimate ``(T, D)`` and its standard error ``(T, D)``, over the estimator's own features
        (pixels for RISE, superpixels for LIME and KernelSHAP)."""


def relative_error(estimate: np.ndarray, stderr: np.ndarray) -> float:
    """Estimated relative L2 error of a map: ``max_t ||se_t|| / ||a_t - mean(a_t)||``.

    ``a_t`` (D,) is the running estimate for target t and ``se_t`` its standard error per
    feature, so this is the expected distance to the map the method gives with unlimited
    queries, relative to the map's own spread (a constant offset is not part of either).
    Pearson correlation with that limit is about ``1 / sqrt(1 + e**2)``: 0.995 at
    ``e = 0.1``, 0.98 at 0.2. A map that is constant with zero error has error 0; a
    constant map with nonzero error, infinity.
    """
    estimate = np.asarray(estimate, dtype=np.float64).reshape(len(estimate), -1)
    stderr = np.asarray(stderr, dtype=np.float64).reshape(len(stderr), -1)
    worst = 0.0
    for a, se in zip(estimate, stderr, strict=True):
        noise, spread = float(np.sqrt((se ** 2).sum())), float(np.linalg.norm(a - a.mean()))
        if not np.isfinite(noise):
            return math.inf
        if noise == 0.0:
            continue
        worst = max(worst, noise / spread if spread > 0 else math.inf)
    return worst


@dataclass(frozen=True)
class Stopping:
    """When the engine may stop a sampling method early.

    The estimate's :func:`relative_error` is checked once at least ``min_queries``
    perturbations are in, and again each time their number has grown by the factor
    ``growth`` (``min_queries * growth**k``, checked at the end of the model batch that
    reaches it, so the schedule does not depend on the batch size); the run stops at the
    first check where it is at most ``tolerance``.
    """

    tolerance: float
    min_queries: int = 100
    growth: float = 1.25


@dataclass
class RunResult:
    """What a run did: queries made and, with :class:`Stopping`, whether and how it converged.

    ``history`` lists ``(queries, relative_error)`` at every check; ``error`` is the
    last of them (NaN when no check was made).
    """

    n_queries: int
    stopping: Stopping | None = None
    converged: bool | None = None
    error: float = float("nan")
    history: list[tuple[int, float]] = field(default_factory=list)

    def extras(self) -> dict[str, object]:
        """The fields an :class:`~perturbx.Explanation` reports (nothing without stopping)."""
        if self.stopping is None:
            return {}
        return {"converged": self.converged, "estimated_error": self.error, "tolerance": self.stopping.tolerance,
                "convergence_history": np.array(self.history, dtype=np.float64).reshape(-1, 2)}


def progress_enabled(progress: bool | None) -> bool:
    """``progress=None`` means: show a bar only when stderr is a terminal."""
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def run(plan: Plan, adapter, target: Target | np.ndarray, *, budget: int | None = None,
        progress: bool | None = None, desc: str = "perturbx", stopping: Stopping | None = None) -> RunResult:
    """Stream every chunk of ``plan.sampler`` through the model into ``plan.estimator``.

    Parameters
    ----------
    plan : Plan
    adapter : perturbx.adapters.Adapter
    target : perturbx.targets.Target or ndarray of int (T,)
        A bound target: turns each batch's output into the scalars ``(n, T)`` passed to the
        estimator. Class indices stand for :class:`~perturbx.targets.Class` of them.
    budget : int, optional
        Queries this run may still make. Without ``stopping``, a sampler that needs more
        raises before the model is called; with it, the run ends at the budget.
    progress : bool or None
        Show a tqdm bar (None: only on a terminal).
    desc : str
        Label of the progress bar.
    stopping : Stopping, optional
        Stop once the estimate has converged; needs an estimator with
        ``standard_error`` (:class:`ErrorEstimating`) and a sampler whose every prefix
        is a valid sample (its ``n_total`` is lowered to a smaller budget).

    Returns
    -------
    RunResult
    """
    return run_many([plan], adapter, [target], budgets=[budget], progress=progress, desc=desc, stopping=stopping)[0]


def run_many(plans: list[Plan], adapter, targets: list[Target | np.ndarray], *,
             budgets: list[int | None] | None = None, progress: bool | None = None, desc: str = "perturbx",
             stopping: Stopping | None = None) -> list[RunResult]:
    """:func:`run` for several plans at once (one per image), sharing model batches.

    Each plan's chunks are made, rendered and folded exactly as :func:`run` does for it
    alone, in the same order; only the model calls are shared: a call takes up to
    ``batch_size`` rows from the chunks waiting, across plans (never two chunks of one plan),
    so a cheap model with small inputs sees full batches whatever each image's number of
    perturbations. A plan has one chunk in flight at a time (so with ``stopping`` it stops
    as it would alone). Memory: one chunk per plan, plus one model batch.

    Parameters
    ----------
    plans : list of Plan
    adapter : perturbx.adapters.Adapter
    targets : list of Target or class indices, one per plan
    budgets : list of (int or None), optional
        Queries each plan may make (as ``budget`` of :func:`run`).
    progress, desc, stopping
        As for :func:`run`; ``progress`` counts every plan's queries.

    Returns
    -------
    list of RunResult, one per plan
    """
    budgets = budgets if budgets is not None else [None] * len(plans)
    streams = [_Stream.open(plan, adapter, target, budget, stopping, desc)
               for plan, target, budget in zip(plans, targets, budgets, strict=True)]
    # an asynchronous adapter (a GPU) gets the next batch before this one's scores are read; a plan then has
    # two chunks in flight, so that the queue does not drain where one chunk ends (not with stopping, where a
    # plan must stop at the batch where it converged, as it would alone)
    pipelined = stopping is None and bool(getattr(adapter, "asynchronous", False))
    for s in streams:
        s.max_in_flight = 2 if pipelined else 1
    queue: deque[_Piece] = deque()
    buffers = BufferPool()
    with _progress_bar(sum(s.limit for s in streams), progress, desc) as bar, \
            _render_ahead(adapter, buffers) as ahead:
        pending = None  # a model call sent and not yet read (asynchronous adapters without stopping)
        while True:
            _fill(queue, streams, adapter, ahead)
            call = _send_one_batch(queue, adapter, buffers)
            if pending is not None:
                pending.read(buffers, adapter)
            elif call is None:
                break
            pending = call if pipelined else None
            if call is not None and not pipelined:
                call.read(buffers, adapter)
            _fold_completed(queue, stopping, bar, buffers, adapter)
    for s in streams:
        if stopping is not None and s.result.converged is None:
            s.result.converged = False
    return [s.result for s in streams]


@dataclass
class _Stream:
    """One plan being run: its chunk iterator, result, target and stopping schedule."""

    plan: Plan
    target: Target
    chunks: object
    limit: int
    result: RunResult
    next_check: float
    #: masks per chunk; with ``sample_shape``, the rows of the pooled buffer each chunk is rendered into
    chunk_rows: int = 0
    #: shape of one rendered sample when the renderer writes into a given buffer (``render(masks, out=)``)
    sample_shape: tuple[int, ...] | None = None
    in_flight: int = 0
    max_in_flight: int = 1
    done: bool = False

    @classmethod
    def open(cls, plan: Plan, adapter, target, budget: int | None, stopping: Stopping | None, desc: str) -> _Stream:
        total = plan.sampler.n_total
        if stopping is None and budget is not None and total > budget:
            raise QueryBudgetError(f"{desc} needs {total} perturbed queries but only {budget} are left "
                                   f"of max_queries; raise max_queries or lower the number of perturbations.")
        if stopping is not None and not isinstance(plan.estimator, ErrorEstimating):
            raise TypeError(f"{type(plan.estimator).__name__} has no standard_error(); {desc} cannot stop early.")
        if not isinstance(target, Target):
            target = Class([int(t) for t in np.asarray(target).ravel()])
        limit = total if budget is None else min(total, budget)
        if limit < total:  # only with stopping: run the budget's prefix of the (prefix-valid) stream
            plan.sampler.n_total = limit
        rows = _chunk_size(plan, adapter, stopping)
        chunks = iter(plan.sampler.chunks(rows))
        return cls(plan, target, chunks, limit, RunResult(0, stopping),
                   stopping.min_queries if stopping is not None else math.inf, rows, _out_shape(plan.renderer))

    def render(self, backend, dtype, buffers: BufferPool) -> tuple | None:
        """The next (chunk, masks, rendered batch, (the batch's pooled buffer, the masks'), each None when not
        pooled), or None at the end of the plan.

        A chunk with a ``mask_shape`` (the shape of one mask) writes its masks into pooled memory
        (``materialize(backend, dtype, out=)``): a 64-row chunk of 224 x 224 masks is 12.8 MB, and fresh
        allocations of that size stayed in the process's heap after each explanation (issue 16).
        """
        chunk = next(self.chunks, None)
        if chunk is None:
            return None
        mask_buf = None
        mask_shape = getattr(chunk, "mask_shape", None)  # the chunk can write its masks into given memory
        if mask_shape is None:
            masks = chunk.materialize(backend, dtype)
        else:
            mask_buf = buffers.take(backend, (self.chunk_rows, *mask_shape), dtype)
            masks = chunk.materialize(backend, dtype, out=mask_buf[:chunk.size])
        if self.sample_shape is None:
            return chunk, masks, self.plan.renderer.render(masks), (None, mask_buf)
        buf = buffers.take(backend, (self.chunk_rows, *self.sample_shape), dtype)  # the last chunk may be shorter
        return chunk, masks, self.plan.renderer.render(masks, out=buf[:chunk.size]), (buf, mask_buf)

    def may_pull(self) -> bool:
        """One chunk in flight per plan (two when model calls are pipelined): a model call never takes two
        chunks of one plan anyway."""
        return not self.done and self.in_flight < self.max_in_flight

    def fold(self, piece: _Piece, stopping: Stopping | None) -> None:
        """Fold a scored chunk into the estimator; check convergence on the run's schedule."""
        self.in_flight -= 1
        result = self.result
        result.n_queries += piece.chunk.size
        with host_math():
            self.plan.estimator.update(piece.chunk, piece.masks, piece.scores)
            if result.n_queries >= self.next_check or (stopping is not None and result.n_queries >= self.limit):
                if _check(self.plan.estimator, stopping, result):
                    self.done = True
                self.next_check = max(self.next_check * stopping.growth, result.n_queries + 1)


@dataclass
class _Piece:
    """A rendered chunk waiting for (the rest of) its scores."""

    stream: _Stream
    chunk: object
    masks: object
    rendered: object
    buffer: tuple  # the pooled memory ``rendered`` and ``masks`` live in (None: their own)
    scores: np.ndarray
    sent: int = 0  # rows sent to the model
    scored: int = 0  # rows whose scores are in

    @property
    def remaining(self) -> int:
        """Rows not yet sent to the model."""
        return self.chunk.size - self.sent

    @property
    def complete(self) -> bool:
        return self.scored == self.chunk.size


class _Ahead:
    """Renders one chunk ahead in a background thread (one at a time, whichever plan it belongs to)."""

    def __init__(self, pool: ThreadPoolExecutor | None, backend, dtype, buffers: BufferPool) -> None:
        self.pool, self.backend, self.dtype, self.buffers = pool, backend, dtype, buffers
        self.stream: _Stream | None = None
        self.future = None

    def take(self, stream: _Stream) -> tuple | None:
        """``stream``'s next rendered chunk (the one rendered ahead if it is this stream's); then render the
        chunk after it in the background, while the model scores this one."""
        if self.stream is not None and self.stream.done:  # its plan converged: the chunk ahead is not needed
            unused = self.future.result()
            if unused is not None:
                _give_back(self.buffers, self.backend, self.dtype, *unused[3])
            self.stream, self.future = None, None
        if self.stream is stream:
            item, self.stream, self.future = self.future.result(), None, None
        else:
            item = stream.render(self.backend, self.dtype, self.buffers)
        if self.pool is not None and item is not None and self.stream is None:
            self.stream, self.future = stream, self.pool.submit(stream.render, self.backend, self.dtype, self.buffers)
        return item


@contextmanager
def _render_ahead(adapter, buffers: BufferPool):
    """A one-thread pool that renders the next chunk while the model runs, for adapters that ask for it
    (``overlap_rendering``: a remote model waits on the network, not on this process's cores)."""
    if not getattr(adapter, "overlap_rendering", False):
        yield _Ahead(None, adapter.backend, adapter.dtype, buffers)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="perturbx-render") as pool:
        yield _Ahead(pool, adapter.backend, adapter.dtype, buffers)


def _fill(queue: deque, streams: list[_Stream], adapter, ahead: _Ahead) -> None:
    """Render chunks, round robin over the plans that may take one, until a model batch is waiting."""
    while sum(p.remaining for p in queue) < adapter.batch_size:
        pulled = False
        for s in streams:
            if not s.may_pull():
                continue
            item = ahead.take(s)
            if item is None:
                s.done = True
                continue
            chunk, masks, rendered, buf = item
            queue.append(_Piece(s, chunk, masks, rendered, buf, np.empty((chunk.size, s.target.n_outputs))))
            s.in_flight += 1
            pulled = True
            if sum(p.remaining for p in queue) >= adapter.batch_size:
                return
        if not pulled:
            return


def _give_back(buffers: BufferPool, backend, dtype, *pooled) -> None:
    """Return a chunk's pooled memory (its rendered batch's, its masks'; None where not pooled) to the pool."""
    for buf in pooled:
        if buf is not None:
            buffers.give(backend, buf, dtype)


def _fold_completed(queue: deque, stopping: Stopping | None, bar, buffers: BufferPool, adapter) -> None:
    """Fold the scored chunks at the head of the queue (a chunk's memory goes with it, its buffers to the pool:
    the rendered batch's before the estimator's update, the masks' after it)."""
    while queue and queue[0].complete:
        piece = queue.popleft()
        rendered_buf, mask_buf = piece.buffer
        _give_back(buffers, adapter.backend, adapter.dtype, rendered_buf)
        piece.stream.fold(piece, stopping)
        _give_back(buffers, adapter.backend, adapter.dtype, mask_buf)
        bar.update(piece.chunk.size)


@dataclass
class _Call:
    """A model call sent: the rows of each piece it took, and how to read their scores."""

    parts: list[tuple[_Piece, int, int]]
    result: Callable[[], list[np.ndarray]]
    joined: object  # the pooled batch the rows were copied into, or None

    def read(self, buffers: BufferPool, adapter) -> None:
        """Wait for the scores and put them in their pieces; the joined batch's memory goes back to the pool."""
        for (piece, lo, hi), v in zip(self.parts, self.result(), strict=True):
            piece.scores[lo:hi] = v
            piece.scored = hi
        if self.joined is not None:
            buffers.give(adapter.backend, self.joined, adapter.dtype)


def _send_one_batch(queue: deque, adapter, buffers: BufferPool) -> _Call | None:
    """One model call: up to ``batch_size`` unsent rows of the waiting chunks, in order, one chunk per plan
    (None when no row waits).

    Only chunks whose samples have the shape of the first one's share the call (samples of several
    sizes are scored in separate calls). Rows of several chunks are copied into one pooled batch, given
    back once the scores are read: a model must not keep its input batch after the call (perturbx
    reuses the memory).
    """
    room, parts, seen, shape = adapter.batch_size, [], set(), None
    for piece in queue:
        if room == 0:
            break
        if piece.remaining == 0 or id(piece.stream) in seen:
            continue
        if shape is None:
            shape = tuple(piece.rendered.shape[1:])
        elif tuple(piece.rendered.shape[1:]) != shape:
            continue
        seen.add(id(piece.stream))
        take = min(room, piece.remaining)
        parts.append((piece, piece.sent, piece.sent + take))
        piece.sent += take
        room -= take
    if not parts:
        return None
    rows = [p.rendered[lo:hi] for p, lo, hi in parts]
    joined = None
    if len(rows) == 1:
        batch = rows[0]
    else:
        joined = buffers.take(adapter.backend, (adapter.batch_size, *shape), adapter.dtype)
        batch, start = joined[:adapter.batch_size - room], 0
        for r in rows:
            batch[start:start + len(r)] = r
            start += len(r)
    specs = [(p.stream.target, hi - lo) for p, lo, hi in parts]
    submit = getattr(adapter, "submit_targets", None)
    if submit is None:  # an adapter of another kind (duck-typed): scored now
        values = adapter.predict_targets(batch, specs)
        return _Call(parts, lambda: values, joined)
    return _Call(parts, submit(batch, specs), joined)


def _out_shape(renderer) -> tuple[int, ...] | None:
    """``renderer.sample_shape`` when its ``render`` takes ``out=`` (the engine then renders into pooled memory)."""
    shape = getattr(renderer, "sample_shape", None)
    try:
        takes_out = "out" in inspect.signature(renderer.render).parameters
    except (TypeError, ValueError):
        takes_out = False
    return tuple(shape) if shape is not None and takes_out else None


def _chunk_size(plan: Plan, adapter, stopping: Stopping | None) -> int:
    """Masks per chunk: whole model batches, as many as fit in ``RENDER_BYTES`` (one when stopping)."""
    per_sample = getattr(plan.renderer, "sample_nbytes", None)
    if stopping is not None or not per_sample:
        return adapter.batch_size  # convergence is checked at the end of a model batch
    batches = RENDER_BYTES // (adapter.batch_size * per_sample)
    return adapter.batch_size * int(max(1, min(MAX_BATCHES_PER_CHUNK, batches)))


def predict_in_batches(adapter, batch, target: Target | None = None) -> np.ndarray:
    """Scalars of a batch on the adapter's backend, in calls of at most ``batch_size`` rows.

    With a bound ``target``: its scalars ``(n, T)``; without: a classifier's scores ``(n, n_classes)``.
    """
    n, size = int(batch.shape[0]), adapter.batch_size

    def call(part):
        return adapter.predict_batch(part) if target is None else adapter.predict_target(part, target)

    if n <= size:
        return call(batch)
    return np.concatenate([call(batch[i:i + size]) for i in range(0, n, size)])


_BLAS = None


@contextmanager
def host_math():
    """Context in which numpy's BLAS runs on one thread: the estimators' own linear algebra.

    Their products and solves are small (a few thousand rows by at most a few hundred
    columns), gain nothing from more threads, and with several they contend with the
    model's threads, which have just run: on 2 cores the jackknife solves of KernelSHAP at
    1,000 samples took several times their one-thread time (``benchmarks/RESULTS.md``,
    issue 16). The limit is process-wide while it holds; models are never called inside.
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


def _check(estimator: ErrorEstimating, stopping: Stopping, result: RunResult) -> bool:
    """Record the estimate's relative error; True when it meets the tolerance."""
    error = relative_error(*estimator.standard_error())
    result.history.append((result.n_queries, error))
    result.error = error
    if error <= stopping.tolerance:
        result.converged = True
    return bool(result.converged)


def _progress_bar(total: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="query", disable=not progress_enabled(progress), leave=False)
