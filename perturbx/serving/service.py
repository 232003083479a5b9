"""The explanation service without the server: configuration in, explanations of numpy samples out.

:class:`ExplanationService` is what the MLServer runtime (:mod:`perturbx.serving.runtime`)
runs for each request; it knows nothing of HTTP beyond the status of its errors
(:class:`~perturbx.serving.errors.ServingError`). It bounds every request:

- **queries**: ``max_queries`` per explanation (the configured cap, or less if the request
  asks); over it the answer is HTTP 422, or with ``on_budget="partial"`` what a sampling
  method has after the budget;
- **time**: a deadline from the request's arrival, waiting included; past it the answer is
  HTTP 504 and the explanation stops at its next model call;
- **concurrency**: ``max_concurrency`` explanations at once, each with an adapter of its
  own, ``max_queue`` more waiting, HTTP 503 beyond;
- **repeats**: answers are cached by input, options and configuration, and identical requests
  in flight share one explanation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from perturbx.adapters import RemoteError
from perturbx.errors import QueryBudgetError

from .cache import ResponseCache, request_key
from .config import WHERE, ServingConfig
from .errors import ConfigError, DeadlineError, ServingError, redact
from .models import Slot, build_adapter, explainer_class
from .specs import parse_target

logger = logging.getLogger("perturbx.serving")

#: the tolerance of a ``on_budget="partial"`` rerun: met only by a map with no error at all
_NEVER_CONVERGED = 1e-300


@dataclass(frozen=True)
class RequestOptions:
    """What one request asks beyond its samples (V2 request parameters ``target``, ``max_queries``, ``deadline_s``)."""

    target_spec: Any = None
    max_queries: int | None = None
    deadline_s: float = 60.0

    def key_fields(self) -> dict[str, Any]:
        """The options that change an answer (the deadline does not)."""
        return {"target": self.target_spec, "max_queries": self.max_queries}


@dataclass(frozen=True)
class Answer:
    """The explanations of one request's ``N`` samples, ``T`` targets each, maps of ``H x W`` pixels.

    Attributes
    ----------
    attributions : ndarray (N, T, H, W)
        The maps, in the units of the target's score (score change).
    targets : ndarray (N, T) int64
        Class index (or the target's label) of each map.
    scores : ndarray (N, T) float64
        The target's scalars for the unperturbed sample.
    n_queries : ndarray (N,) int64
        Model queries of each explanation, the unperturbed input included.
    seconds : ndarray (N,) float64
        Seconds of each explanation (the request's time shared in proportion to queries).
    converged : ndarray (N,) bool
        False where a run stopped at the budget before its tolerance (or its end).
    estimated_error : ndarray (N,) float64 or None
        Estimated relative error of each map (methods run with a ``tolerance``).
    method : str
    params : dict
        The explainer's parameters, JSON-able.
    max_queries : int or None
        The budget the request ran under.
    budget_exhausted : bool
        Whether an explanation stopped at the budget (``on_budget="partial"``).
    cached : bool
        Whether this answer came from the cache (or an identical request in flight).
    """

    attributions: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    n_queries: np.ndarray
    seconds: np.ndarray
    converged: np.ndarray
    estimated_error: np.ndarray | None
    method: str
    params: dict
    max_queries: int | None
    budget_exhausted: bool
    cached: bool = False


class ExplanationService:
    """An explainer, its predictor's adapters and the limits of one configuration.

    Parameters
    ----------
    config : ServingConfig

    Raises
    ------
    ConfigError
        Any invalid setting, named by its path in ``parameters.extra``.
    """

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.explainer_cls = explainer_class(config.method, config.base_dir)
        self.params = self._base_params()
        self.fingerprint = config.fingerprint()
        try:  # fails now, not at the first request
            parse_target(config.target, f"{WHERE}.target", allow_function=True)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc
        try:
            self.slots = [Slot(build_adapter(config)) for _ in range(self.limits.max_concurrency)]
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{WHERE}.model: {exc}") from exc
        adapter = self.slots[0].adapter
        self.sample_shape, self.layout = adapter.sample_shape, adapter.layout
        self.cache = ResponseCache(self.limits.cache_size)
        self._free: asyncio.Queue[Slot] = asyncio.Queue()
        for slot in self.slots:
            self._free.put_nowait(slot)
        self._waiting = 0
        self._pool = ThreadPoolExecutor(max_workers=self.limits.max_concurrency, thread_name_prefix="perturbx-serve")
        if config.threads is not None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=config.threads)

    # -- configuration -------------------------------------------------------------------------------------
    def _base_params(self) -> dict[str, Any]:
        """The configured parameters, with ``random_state=0`` by default and no progress bar; validated here."""
        accepted = inspect.signature(self.explainer_cls).parameters
        params = {k: np.asarray(v) if _nested_list(v) else v for k, v in self.config.params.items()}
        if "max_queries" in params:
            raise ConfigError(f"{WHERE}.params.max_queries: set the budget in {WHERE}.limits.max_queries, which "
                              f"a request may lower.")
        if self.limits.max_queries is not None and "max_queries" not in accepted:
            raise ConfigError(f"{WHERE}.limits.max_queries is set but {self.explainer_cls.__name__} takes no "
                              f"query budget; remove it.")
        if "random_state" in accepted:
            params.setdefault("random_state", 0)
        if "progress" in accepted:
            params["progress"] = False
        try:
            self.explainer_cls(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{WHERE}.params: {exc}") from exc
        return params

    def _explainer(self, max_queries: int | None, **overrides: Any) -> Any:
        params = {**self.params, **overrides}
        if max_queries is not None:
            params["max_queries"] = max_queries
        return self.explainer_cls(**params)

    def options(self, parameters: Mapping[str, Any] | None) -> RequestOptions:
        """The options of a request from its V2 parameters (other parameters are ignored).

        Raises
        ------
        ServingError
            (400) a target that cannot be parsed or is not allowed, a budget or deadline
            above the configured one or not a positive number.
        """
        parameters = parameters or {}
        target = self.config.target
        if parameters.get("target") is not None:
            if not self.config.allow_request_target:
                raise ServingError("This explainer's target is fixed by its configuration (allow_request_target is "
                                   "false); send the request without the 'target' parameter.")
            target = parameters["target"]
            try:
                parse_target(target, "the request parameter 'target'")
            except (TypeError, ValueError) as exc:
                raise ServingError(str(exc)) from None
        cap = self.limits.max_queries
        budget = _request_number(parameters, "max_queries", int, 2, cap)
        deadline = _request_number(parameters, "deadline_s", float, 0.0, self.limits.deadline_s)
        return RequestOptions(target, cap if budget is None else budget,
                              self.limits.deadline_s if deadline is None else deadline)

    def secrets(self) -> list[str]:
        """Every string no answer or log line may hold: configured tokens and header values, the token's variable."""
        token_env = self.config.model.get("token_env")
        value = os.environ.get(token_env) if isinstance(token_env, str) else None
        return self.config.secrets() + ([value] if value else [])

    # -- requests --------------------------------------------------------------------------------------------
    async def explain(self, x: np.ndarray, options: RequestOptions) -> Answer:
        """Explain the samples ``x`` (N, *sample_shape): from the cache, an identical request in flight, or a run.

        Raises
        ------
        ServingError
            With the status to answer (see :class:`~perturbx.serving.errors.ServingError`).
        """
        deadline = time.monotonic() + options.deadline_s
        key = request_key(self.fingerprint, x, options.key_fields())
        hit = self.cache.get(key)
        if hit is not None:
            return replace(hit, cached=True)
        pending = self.cache.pending(key)
        if pending is not None:
            return replace(await _until(asyncio.shield(pending), deadline), cached=True)
        self.cache.claim(key)
        try:
            answer = await self._run(x, options, deadline)
        except BaseException as exc:
            self.cache.resolve(key, error=exc)
            raise
        self.cache.resolve(key, answer)
        return answer

    async def _run(self, x: np.ndarray, options: RequestOptions, deadline: float) -> Answer:
        """Wait for a free slot (or answer 503), then explain in a worker thread until the deadline."""
        if self._free.empty() and self._waiting >= self.limits.max_queue:
            raise ServingError(f"The explainer is busy: all its slots are explaining (max_concurrency="
                               f"{self.limits.max_concurrency}) and {self._waiting} requests are waiting (max_queue="
                               f"{self.limits.max_queue}); retry later.", 503)
        if self._waiting == 0 and not self._free.empty():  # a free slot and nobody before us: take it now
            slot = self._free.get_nowait()
        else:
            self._waiting += 1
            try:
                slot = await _until(self._free.get(), deadline)
            finally:
                self._waiting -= 1
        slot.deadline = deadline
        work = asyncio.get_running_loop().run_in_executor(self._pool, self._explain_in_thread, slot, x, options)
        work.add_done_callback(lambda done: self._release(slot, done))
        return await _until(asyncio.shield(work), deadline)

    def _release(self, slot: Slot, done: asyncio.Future) -> None:
        """Give the slot back once its thread has finished (also after a deadline answered 504 without it)."""
        if not done.cancelled():
            done.exception()  # retrieved: an explanation stopped by its deadline raises after its answer went
        slot.deadline = math.inf
        self._free.put_nowait(slot)

    def _explain_in_thread(self, slot: Slot, x: np.ndarray, options: RequestOptions) -> Answer:
        """Run the explainer on the slot's adapter; every error becomes a :class:`ServingError`."""
        try:
            return self._explain_samples(slot, x, options)
        except ServingError as exc:
            raise ServingError(redact(exc.message, self.secrets()), exc.status) from None
        except Exception as exc:
            status, message = _status(exc)
            raise ServingError(redact(message, self.secrets()), status) from None

    def _explain_samples(self, slot: Slot, x: np.ndarray, options: RequestOptions) -> Answer:
        target = parse_target(options.target_spec, "the target", allow_function=True)
        budget, exhausted = options.max_queries, False
        explainer = self._explainer(budget)
        try:
            explanations = explainer.explain_many(slot.adapter, list(x), [target] * len(x))
        except QueryBudgetError as exc:
            if self.limits.on_budget != "partial" or not _has_tolerance(explainer):
                raise ServingError(f"The explanation needs more model queries than max_queries={budget} allows "
                                   f"({exc}). Ask for a larger max_queries (at most {self.limits.max_queries}) or "
                                   f"configure fewer perturbations.", 422) from None
            explainer = self._explainer(budget, tolerance=_NEVER_CONVERGED)
            explanations = explainer.explain_many(slot.adapter, list(x), [target] * len(x))
            exhausted = True
        return _answer(explanations, explainer, budget, exhausted)

    def stats(self) -> dict[str, int]:
        """Counters for logs: cache entries, hits, misses, requests waiting, free slots."""
        return {"cached": len(self.cache), "hits": self.cache.hits, "misses": self.cache.misses,
                "waiting": self._waiting, "free_slots": self._free.qsize()}

    def close(self) -> None:
        """Stop the worker threads and close the adapters (request threads of ``Remote``)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for slot in self.slots:
            slot.close()


def _nested_list(value: object) -> bool:
    """A JSON list of lists: a segment map or a baseline image, passed to the explainer as an array."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, list) for v in value)


def _has_tolerance(explainer: Any) -> bool:
    return "tolerance" in inspect.signature(type(explainer)).parameters


async def _until(awaitable, deadline: float):
    """``await awaitable``, or :class:`DeadlineError` at ``deadline`` (a ``time.monotonic()`` value)."""
    try:
        return await asyncio.wait_for(awaitable, timeout=max(0.0, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        raise DeadlineError("The explanation did not finish within the request's deadline; ask with a larger "
                               "deadline_s (request parameter, up to the configured limits.deadline_s), a smaller "
                               "max_queries, or fewer samples per request.") from None


def _status(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message of an error raised while explaining."""
    if isinstance(exc, RemoteError):
        where = f" (HTTP {exc.status})" if exc.status is not None else ""
        return 502, f"The predictor failed{where}: {exc}"
    if isinstance(exc, (ValueError, TypeError)):
        return 400, str(exc)
    return 500, f"The explanation failed: {type(exc).__name__}: {exc}"


def _request_number(parameters: Mapping[str, Any], name: str, kind: type, low: float, cap: float | None):
    """Request parameter ``name`` as ``kind`` in ``(low, cap]`` (``[low, cap]`` for ints), or None when absent."""
    value = parameters.get(name)
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= low if kind is int else value > low) and (kind is float or float(value).is_integer())
    if not ok:
        expected = "a number > 0" if kind is float else "an int >= 2"
        raise ServingError(f"The request parameter {name!r} must be {expected}. Got {value!r}.")
    if cap is not None and value > cap:
        raise ServingError(f"The request parameter {name}={value!r} is above this explainer's limit ({cap}); ask "
                           f"for at most {cap}.")
    return kind(value)


def _answer(explanations: list, explainer: Any, budget: int | None, exhausted: bool) -> Answer:
    """One :class:`Answer` from the explanations of a request's samples."""
    maps = [e.maps() for e in explanations]
    if len({m.shape for m in maps}) > 1:
        raise ServingError(f"The samples of this request have different numbers of targets "
                           f"({[len(m) for m in maps]}), which one output tensor cannot hold; send them in separate "
                           f"requests.", 422)
    converged = np.array([bool(e.extras.get("converged", True)) for e in explanations])
    errors = [e.extras.get("estimated_error") for e in explanations]
    known = all(v is not None and np.isfinite(v) for v in errors)
    targets = np.stack([np.atleast_1d(e.targets) for e in explanations]).astype(np.int64)
    return Answer(
        attributions=np.stack(maps), targets=targets,
        scores=np.stack([np.atleast_1d(e.scores) for e in explanations]).astype(np.float64),
        n_queries=np.array([e.n_queries for e in explanations], dtype=np.int64),
        seconds=np.array([e.seconds for e in explanations], dtype=np.float64), converged=converged,
        estimated_error=np.array(errors, dtype=np.float64) if known else None, method=type(explainer).__name__,
        params=_jsonable(explainer.get_params()), max_queries=budget,
        budget_exhausted=exhausted or bool(budget is not None and not converged.all()))


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """The explainer's parameters with arrays, tuples and objects written as JSON values (objects by repr)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = f"array of shape {v.shape}"
        elif isinstance(v, tuple):
            v = list(v)
        elif not isinstance(v, (str, int, float, bool, list, dict, type(None))):
            v = repr(v)
        out[k] = v
    return out
