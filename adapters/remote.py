"""Adapter for a model behind an HTTP server (Open Inference Protocol v2, or plain JSON)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import urllib.parse
from collections.abc import Callable as CallableT
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from perturbx._utils import check_choice, check_float, check_int, check_sample_shape

from ._budget import SharedBudget
from ._cache import ResponseCache
from ._http import MalformedResponseError, RemoteError, Transport
from .base import Adapter

__all__ = ["MalformedResponseError", "Remote", "RemoteError"]

_NUMERIC = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                      "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"})


class Remote(Adapter):
    """Ask a model server for scores, over HTTP.

    ``protocol="v2"`` speaks the Open Inference Protocol (KServe v2; MLServer, KServe,
    Triton): ``POST {url}/v2/models/{model}/infer`` with one FP32 input tensor, and reads
    the first output (or ``output_name``). ``protocol="json"`` POSTs to ``url`` itself what
    ``request(batch)`` returns and reads the scores with ``response(answer)``; the defaults
    speak TensorFlow Serving's REST format (``{"instances": ...}`` -> ``{"predictions": ...}``).

    The engine hands the adapter ``batch_size * concurrency`` rows at a time; rows already in
    the cache are answered from it, the others go out as requests of at most ``batch_size``
    rows, ``concurrency`` of them in flight at once. Failed requests (5xx, 429, timeouts,
    dropped connections) are retried with exponential backoff and jitter.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` base URL of the server (``protocol="v2"``), or the
        endpoint itself (``protocol="json"``).
    model : str, optional
        Model name on the server; required for ``protocol="v2"``.
    protocol : {"v2", "json"}, default "v2"
    batch_size : int, default 32
        Rows per HTTP request.
    concurrency : int, default 8
        Requests in flight at once (threads).
    timeout : float, default 30
        Seconds to connect and for each read of one request.
    retries : int, default 5
        Extra attempts for a request that failed in a retryable way.
    input_layout : {"CHW", "HWC", "HW"}, default "CHW"
    sample_shape : tuple of int, optional
        Shape of one sample the server expects; checked before anything is sent.
    input_name : str, default "input-0"
        Name of the v2 input tensor.
    output_name : str or sequence of str, optional
        v2 output to read; the first output when None. Several names return a dict name ->
        array ``(n, ...)`` (a detector's boxes, scores and labels), read by a
        :mod:`perturbx.targets` target; each output keeps the shape the server gives it.
    model_version : str, optional
        v2 model version (``/v2/models/{model}/versions/{model_version}/infer``).
    headers : dict of str, optional
        Extra HTTP headers, e.g. ``{"Authorization": "Bearer ..."}``. Their values never
        appear in errors, logs or ``repr``.
    token_env : str, optional
        Name of an environment variable holding a bearer token, sent as
        ``Authorization: Bearer <token>``; read at each request and never stored.
    verify : bool or str, default True
        TLS certificate verification: the system's CAs, or a CA bundle path; False disables it.
    cache_dir : str or os.PathLike, optional
        Folder of an on-disk cache of answers, one entry per input row (keyed by a hash of the
        endpoint and the row), shared by reruns, explainers and processes.
    max_queries : int, optional
        Most rows this adapter may send to the server over its lifetime (cache hits are free),
        counted once across its copies (``compare(n_jobs=...)`` threads, ``explain_dataset``
        worker processes on this machine); beyond it :class:`perturbx.QueryBudgetError` is
        raised before sending.
    request, response : callable, optional
        ``protocol="json"`` only: ``request(batch (n, *sample_shape) float32) -> JSON-able`` and
        ``response(parsed JSON answer) -> scores (n, n_classes)``.
    backoff : float, default 0.25
        Seconds; the n-th retry waits ``uniform(0, min(8, backoff * 2**n))``.

    Attributes
    ----------
    batch_size : int
        Rows the engine hands the adapter at once: ``batch_size * concurrency`` of the arguments.
    request_size : int
        Rows per HTTP request (the ``batch_size`` argument).
    n_queries : int
        Rows scored through this adapter (cache hits included).
    n_sent, n_cached, n_requests, n_retries : int
        Rows sent to the server, rows answered by the cache, HTTP requests that succeeded,
        retries made.
    """

    #: the server does the model's work: render the next chunk while waiting for its answer
    overlap_rendering = True

    def __init__(self, url: str, model: str | None = None, *, protocol: str = "v2", batch_size: int = 32,
                 concurrency: int = 8, timeout: float = 30.0, retries: int = 5, input_layout: str = "CHW",
                 sample_shape: tuple[int, ...] | None = None, input_name: str = "input-0",
                 output_name: str | list[str] | None = None, model_version: str | None = None,
                 headers: dict[str, str] | None = None, token_env: str | None = None,
                 verify: bool | str | os.PathLike = True, cache_dir: str | os.PathLike | None = None,
                 max_queries: int | None = None, request: CallableT[[np.ndarray], Any] | None = None,
                 response: CallableT[[Any], Any] | None = None, backoff: float = 0.25) -> None:
        self.protocol = check_choice(protocol, "protocol", "Remote", ("v2", "json"))
        self.request_size = check_int(batch_size, "batch_size", "Remote")
        self.concurrency = check_int(concurrency, "concurrency", "Remote")
        super().__init__(batch_size=self.request_size * self.concurrency, input_layout=input_layout)
        self.model, self.model_version = _check_model(model, model_version, self.protocol)
        if output_name is not None and not isinstance(output_name, str):
            output_name = list(output_name)
            if not output_name or not all(isinstance(n, str) for n in output_name):
                raise ValueError(f"The 'output_name' parameter of Remote must be a str or a non-empty list of str. "
                                 f"Got {output_name!r}.")
        self.input_name, self.output_name = input_name, output_name
        self._codec = _make_codec(self.protocol, request, response, self.model, self.model_version,
                                  input_name, output_name)
        self._sample_shape = None if sample_shape is None else check_sample_shape(sample_shape, self.layout, "Remote")
        self._headers = _check_headers(headers)
        query = urllib.parse.parse_qsl(urllib.parse.urlsplit(str(url)).query)
        self._url_secrets = [v for _, v in query if len(v) >= 8]
        self.token_env = _check_token_env(token_env)
        self.max_queries = None if max_queries is None else check_int(max_queries, "max_queries", "Remote")
        self._budget = None if self.max_queries is None else SharedBudget(self.max_queries, "Remote")
        verify = os.fspath(verify) if isinstance(verify, os.PathLike) else verify
        if not isinstance(verify, (bool, str)):
            raise TypeError(f"The 'verify' parameter of Remote must be True, False or a CA bundle path. "
                            f"Got {type(verify).__name__} instead.")
        self.transport = Transport(url, timeout=check_float(timeout, "timeout", "Remote", low=0, high=math.inf,
                                                            low_open=True, high_open=True),
                                   retries=check_int(retries, "retries", "Remote", minimum=0), verify=verify,
                                   headers=self._request_headers, secrets=self._secrets,
                                   backoff=check_float(backoff, "backoff", "Remote", low=0, high=60))
        self.cache = None if cache_dir is None else ResponseCache(cache_dir, self._namespace(url))
        self.n_sent = self.n_cached = self.n_requests = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    # -- public ------------------------------------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self._sample_shape

    @property
    def n_retries(self) -> int:
        return self.transport.n_retries

    def close(self) -> None:
        """Stop the request threads and close the cache (the adapter can still be used after)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.cache is not None:
            self.cache.close()

    def __repr__(self) -> str:
        auth = sorted(self._headers) + ([f"${self.token_env}"] if self.token_env else [])
        return (f"Remote({self.transport.safe_url!r}, {self.model!r}, protocol={self.protocol!r}, "
                f"batch_size={self.request_size}, concurrency={self.concurrency}, "
                f"input_layout={self.input_layout!r}, auth={auth}, cache={self.cache is not None})")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.transport._headers, self.transport._secrets = self._request_headers, self._secrets

    # -- the model call ----------------------------------------------------------------------------------
    def _forward(self, batch: np.ndarray) -> np.ndarray | dict | list:
        batch = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        n = len(batch)
        rows: list[Any] = [None] * n
        keys = self.cache.keys(batch) if self.cache is not None else None
        if keys is not None:
            hits = self.cache.get_many(keys)
            for i, key in enumerate(keys):
                rows[i] = hits.get(key)
        todo = [i for i in range(n) if rows[i] is None]
        self._reserve(len(todo))
        groups = [todo[i:i + self.request_size] for i in range(0, len(todo), self.request_size)]
        for idx, answer in zip(groups, self._map(self._infer, [batch[g] for g in groups]), strict=True):
            for j, i in enumerate(idx):
                rows[i] = _row(answer, j)
            if keys is not None:
                self.cache.put_many((keys[i], rows[i]) for i in idx)
        with self._lock:
            self.n_cached += n - len(todo)
        return self._stack(rows)

    def _stack(self, rows: list[Any]) -> np.ndarray | dict | list:
        """Per-row answers as one batch: an array, a dict of arrays, or (rows of different shapes) a list of dicts."""
        if not rows:
            return np.zeros((0, 1))
        if isinstance(rows[0], dict):
            if len({tuple((k, v.shape) for k, v in r.items()) for r in rows}) == 1:
                return {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            return rows
        shapes = {r.shape for r in rows}
        if len(shapes) > 1:
            raise MalformedResponseError(f"{self.transport.safe_url} returned outputs of different shapes "
                                         f"{sorted(shapes)} for rows of one batch (the cache included); use a "
                                         f"new cache_dir if the model on the server changed.")
        return np.stack(rows)

    def _reserve(self, n_rows: int) -> None:
        if self._budget is not None:  # one count for every copy, thread and worker process
            self._budget.reserve(n_rows)
        with self._lock:
            self.n_sent += n_rows

    def _map(self, fn, parts: list[np.ndarray]) -> list[np.ndarray]:
        if len(parts) <= 1 or self.concurrency == 1:
            return [fn(p) for p in parts]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="perturbx-remote")
        return list(self._pool.map(fn, parts))

    def _infer(self, rows: np.ndarray) -> np.ndarray:
        path, body = self._codec.encode(rows)
        data = self.transport.post(path, body)
        scores = self._codec.decode(data, len(rows), self.transport.where(path))
        with self._lock:
            self.n_requests += 1
        return scores

    # -- secrets -----------------------------------------------------------------------------------------
    def _token(self) -> str | None:
        if self.token_env is None:
            return None
        token = os.environ.get(self.token_env)
        if not token:
            raise ValueError(f"The environment variable named by token_env={self.token_env!r} is not set or "
                             f"empty; export it before explaining.")
        return token

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        token = self._token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _secrets(self) -> list[str]:
        values = list(self._headers.values())
        secrets = values + [part for v in values for part in v.split() if len(part) >= 8]
        token = os.environ.get(self.token_env) if self.token_env else None
        return secrets + ([token] if token else []) + self._url_secrets

    def _namespace(self, url: str) -> bytes:
        ident = [self.protocol, url, self.model, self.model_version, self.input_name, self.output_name]
        return hashlib.sha256(json.dumps(ident).encode()).digest()


# -- protocol codecs ---------------------------------------------------------------------------------------
class _V2Codec:
    """Open Inference Protocol v2 JSON: one FP32 input tensor in, one output tensor out."""

    def __init__(self, model: str, version: str | None, input_name: str, output_name: str | None) -> None:
        quoted = urllib.parse.quote(model, safe="")
        self.path = (f"/v2/models/{quoted}/infer" if version is None else
                     f"/v2/models/{quoted}/versions/{urllib.parse.quote(version, safe='')}/infer")
        self.input_name, self.output_name = input_name, output_name

    def encode(self, rows: np.ndarray) -> tuple[str, bytes]:
        payload: dict[str, Any] = {"inputs": [{"name": self.input_name, "shape": list(rows.shape),
                                               "datatype": "FP32", "data": rows.ravel()}]}
        if self.output_name is not None:
            payload["outputs"] = [{"name": self.output_name}]
        return self.path, dumps(payload)

    def decode(self, data: bytes, n_rows: int, where: str) -> np.ndarray | dict[str, np.ndarray]:
        answer = _parse_json(data, where)
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise _malformed(where, "outputs", "a non-empty list of output tensors", answer)
        if self.output_name is None:
            return self._tensor(outputs, 0, n_rows, where)
        names = [o.get("name") if isinstance(o, dict) else None for o in outputs]
        wanted = [self.output_name] if isinstance(self.output_name, str) else self.output_name
        missing = [w for w in wanted if w not in names]
        if missing:
            raise MalformedResponseError(f"{where} answered without an output named {missing[0]!r} "
                                         f"(outputs: {names}); check output_name.")
        if isinstance(self.output_name, str):
            return self._tensor(outputs, names.index(self.output_name), n_rows, where)
        return {w: self._tensor(outputs, names.index(w), n_rows, where) for w in wanted}

    def _tensor(self, outputs: list, index: int, n_rows: int, where: str) -> np.ndarray:
        """Output tensor ``index`` of a v2 answer as an array ``(n_rows, ...)`` (one value per row: ``(n_rows, 1)``)."""
        out = outputs[index]
        field = f"outputs[{index}]"
        if not isinstance(out, dict):
            raise _malformed(where, field, "an object with 'shape', 'datatype' and 'data'", out)
        shape = out.get("shape")
        if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise _malformed(where, f"{field}.shape", "a list of non-negative ints", shape)
        if shape[0] != n_rows:
            raise MalformedResponseError(f"{where} answered {field}.shape={shape} for a request of {n_rows} "
                                         f"rows; the first axis must be the batch axis.")
        datatype = out.get("datatype")
        if datatype not in _NUMERIC:
            raise _malformed(where, f"{field}.datatype", f"one of {sorted(_NUMERIC)}", datatype)
        values = _numeric_array(out.get("data"), where, f"{field}.data")
        if values.size != math.prod(shape):
            raise MalformedResponseError(f"{where} answered {values.size} values in {field}.data but "
                                         f"{field}.shape={shape} needs {math.prod(shape)}.")
        return values.reshape(shape if len(shape) > 1 else (n_rows, 1))


class _JSONCodec:
    """Plain JSON endpoint through a user-given request/response mapping."""

    def __init__(self, request: CallableT[[np.ndarray], Any] | None, response: CallableT[[Any], Any] | None) -> None:
        self.request = request or _tf_serving_request
        self.response = response or _tf_serving_response

    def encode(self, rows: np.ndarray) -> tuple[str, bytes]:
        return "", dumps(self.request(rows))

    def decode(self, data: bytes, n_rows: int, where: str) -> np.ndarray:
        answer = _parse_json(data, where)
        try:
            scores = self.response(answer)
        except MalformedResponseError:
            raise
        except Exception as exc:
            raise MalformedResponseError(f"response= could not read the answer of {where}: "
                                         f"{type(exc).__name__}: {exc}. Answer starts {_snippet(answer)}.") from exc
        values = _numeric_array(scores, where, "the scores returned by response=")
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        if values.ndim != 2 or len(values) != n_rows:
            raise MalformedResponseError(f"{where}: response= gave scores of shape {values.shape} for a request "
                                         f"of {n_rows} rows; expected ({n_rows}, n_classes).")
        return values


def _tf_serving_request(rows: np.ndarray) -> dict:
    return {"instances": rows}


def _tf_serving_response(answer: Any) -> Any:
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise MalformedResponseError(f"the answer has no field 'predictions' (TensorFlow Serving format); it "
                                     f"starts {_snippet(answer)}. Pass response= to read another format.")
    return answer["predictions"]


def _make_codec(protocol, request, response, model, version, input_name, output_name):
    if protocol == "v2":
        if request is not None or response is not None:
            raise ValueError("The 'request' and 'response' parameters of Remote are for protocol='json'; "
                             "protocol='v2' builds and reads Open Inference Protocol messages itself.")
        if not isinstance(input_name, str) or not input_name:
            raise ValueError(f"The 'input_name' parameter of Remote must be a non-empty str. Got {input_name!r}.")
        return _V2Codec(model, version, input_name, output_name)
    for name, fn in (("request", request), ("response", response)):
        if fn is not None and not callable(fn):
            raise TypeError(f"The {name!r} parameter of Remote must be a callable. Got {type(fn).__name__}.")
    return _JSONCodec(request, response)


def _check_model(model, version, protocol):
    if protocol == "v2" and (not isinstance(model, str) or not model):
        raise ValueError(f"The 'model' parameter of Remote must be the model's name on the server (a non-empty "
                         f"str) for protocol='v2'. Got {model!r} instead.")
    if version is not None and not isinstance(version, str):
        raise TypeError(f"The 'model_version' parameter of Remote must be a str or None. Got {version!r}.")
    return model, version


def _check_headers(headers) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise TypeError("The 'headers' parameter of Remote must be a dict of str to str "
                        f"(got {type(headers).__name__}); values are not shown here on purpose.")
    return dict(headers)


def _check_token_env(token_env):
    if token_env is None:
        return None
    if not isinstance(token_env, str) or not token_env:
        raise ValueError(f"The 'token_env' parameter of Remote must be the name of an environment variable. "
                         f"Got {token_env!r} instead.")
    if not os.environ.get(token_env):
        raise ValueError(f"token_env={token_env!r} names an environment variable that is not set or empty; "
                         f"export it (e.g. export {token_env}=...) before creating the adapter.")
    return token_env


def dumps(payload: Any) -> bytes:
    """JSON bytes of ``payload``; numpy arrays become (nested) lists of numbers.

    With orjson installed (extra ``remote``) float32 arrays are written in their shortest exact
    form, about 10x faster and 45% smaller than the standard library's float64 digits.
    """
    orjson = _orjson()
    if orjson is None:
        return json.dumps(payload, separators=(",", ":"), default=_to_list).encode()
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY, default=_to_list)


def _orjson():
    try:
        import orjson
    except ImportError:
        return None
    return orjson


def _to_list(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _parse_json(data: bytes, where: str) -> Any:
    orjson = _orjson()
    if orjson is not None:
        with contextlib.suppress(orjson.JSONDecodeError):  # NaN or Infinity: only the standard library reads them
            return orjson.loads(data)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = getattr(exc, "msg", None) or str(exc)
        raise MalformedResponseError(f"{where} answered with a body that is not JSON ({reason}); "
                                     f"it starts {data[:80]!r}.") from None


def _numeric_array(data: Any, where: str, field: str) -> np.ndarray:
    try:
        values = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise _malformed(where, field, "numbers (a flat or nested list of equal-length rows)", data) from None
    if values.ndim == 0:
        raise _malformed(where, field, "a list of numbers", data)
    return values


def _malformed(where: str, field: str, expected: str, seen: Any) -> MalformedResponseError:
    return MalformedResponseError(f"{where} answered a malformed response: field {field!r} must be {expected}. "
                                  f"Got {_snippet(seen)}.")


def _snippet(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _row(answer: np.ndarray | dict[str, np.ndarray], j: int) -> np.ndarray | dict[str, np.ndarray]:
    """Row ``j`` of a decoded answer."""
    if isinstance(answer, dict):
        return {k: v[j] for k, v in answer.items()}
    return answer[j]
