"""The service's response cache: answers kept by key (input, request options, configuration), oldest dropped first.

Identical requests that arrive while the first is still being explained wait for its answer
instead of asking the predictor again (:meth:`ResponseCache.claim`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from typing import Any

import numpy as np


def request_key(fingerprint: str, x: np.ndarray, options: dict[str, Any]) -> str:
    """sha256 of the configuration's fingerprint, the options that change an answer and the input's bytes.

    Parameters
    ----------
    fingerprint : str
        :meth:`perturbx.serving.config.ServingConfig.fingerprint`.
    x : ndarray (N, *sample_shape)
        The samples, as the adapter receives them (float32, C order).
    options : dict
        JSON-able request options (target, max_queries).
    """
    h = hashlib.sha256()
    h.update(fingerprint.encode())
    h.update(json.dumps(options, sort_keys=True, default=repr).encode())
    h.update(str(x.dtype).encode() + repr(x.shape).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


class ResponseCache:
    """At most ``size`` answers in memory (least recently used dropped first), for one event loop.

    Parameters
    ----------
    size : int
        Answers kept; 0 disables the cache (and the sharing of identical requests in flight).
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._pending: dict[str, asyncio.Future] = {}
        self.hits = self.misses = 0

    def get(self, key: str) -> Any | None:
        """The answer stored under ``key`` (now the most recently used), or None."""
        if self.size == 0 or key not in self._items:
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return self._items[key]

    def pending(self, key: str) -> asyncio.Future | None:
        """The future of an identical request being explained now, or None."""
        return self._pending.get(key) if self.size else None

    def claim(self, key: str) -> asyncio.Future | None:
        """Mark ``key`` as being explained; the future that identical requests wait on (None: no cache)."""
        if self.size == 0:
            return None
        self.misses += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        return future

    def resolve(self, key: str, answer: Any = None, error: BaseException | None = None) -> None:
        """Store ``answer`` (errors are not stored) and wake the requests waiting for ``key``."""
        future = self._pending.pop(key, None)
        if error is None and self.size:
            self._items[key] = answer
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        if future is not None and not future.done():
            if error is None:
                future.set_result(answer)
            else:
                future.set_exception(error)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waited

    def __len__(self) -> int:
        return len(self._items)
