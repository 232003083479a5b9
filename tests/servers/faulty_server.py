"""A small Open Inference Protocol (v2) test server that misbehaves on purpose (standard library only).

It scores a linear model ``scores = x.reshape(n, -1) @ weights.T`` in float64, so a test
can compute the same in-process. The model name in ``/v2/models/{name}/infer`` picks the
behaviour:

- ``ok``: always answers correctly; ``slowok`` answers correctly after ``slow_seconds / 10``.
- ``flaky``: each distinct request body fails its first 0, 1 or 2 attempts (decided by a hash
  of the body, so a share of requests fail and every one succeeds within 3 attempts); a
  failure is, in turn, HTTP 503, a dropped connection (closed without an answer) or an
  answer that comes ``slow_seconds`` late (past the client's timeout).
- ``always503``: never succeeds.
- garbage, answered with HTTP 200: ``html``, ``no-outputs``, ``bad-shape``, ``wrong-rows``,
  ``short-data``, ``nan``, ``strings``.
- ``detector`` answers three named output tensors ``boxes`` (n, 2, 4), ``scores`` (n, 2) and ``labels``
  (n, 2, INT64) of :func:`tests.servers.toy_models.toy_detector` (CHW images of 32 x 32).
- ``echo-auth`` (HTTP 401) and ``echo-auth-500`` (HTTP 500) put the request's Authorization
  header in the error body, as a careless server might.
- any other name: HTTP 404.

``POST /json`` speaks TensorFlow Serving's format (``instances`` -> ``predictions``) and
``POST /custom`` a made-up one (``{"x": {"pixels": ...}}`` -> ``{"result": {"probs": ...}}``).
Listens on 127.0.0.1 only; optionally over TLS.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

GARBAGE = ("html", "no-outputs", "bad-shape", "wrong-rows", "short-data", "nan", "strings")


class FaultyServer(ThreadingHTTPServer):
    """Start with ``with FaultyServer(weights) as srv: srv.url``."""

    daemon_threads = True

    def __init__(self, weights: np.ndarray, *, slow_seconds: float = 1.0, tls: ssl.SSLContext | None = None,
                 require_token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.slow_seconds = slow_seconds
        self.require_token = require_token
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.rows_scored = 0
        self.in_flight = self.max_in_flight = 0
        self.failures: Counter[str] = Counter()
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

    def score(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.rows_scored += len(x)
        return x.reshape(len(x), -1).astype(np.float64) @ self.weights.T


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyServer

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        srv = self.server
        with srv.lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            self._route(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _route(self, body: bytes) -> None:
        srv = self.server
        if srv.require_token and self.headers.get("Authorization") != f"Bearer {srv.require_token}":
            return self._send(401, {"error": "missing or wrong bearer token"})
        if self.path.split("?")[0] == "/json":
            x = np.asarray(json.loads(body)["instances"], dtype=np.float32)
            return self._send(200, {"predictions": srv.score(x).tolist()})
        if self.path == "/custom":
            x = np.asarray(json.loads(body)["x"]["pixels"], dtype=np.float32)
            return self._send(200, {"result": {"probs": srv.score(x).tolist()}})
        parts = self.path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v2", "models"] or parts[3] != "infer":
            return self._send(404, {"error": f"no route {self.path}"})
        self._v2(parts[2], body)

    def _v2(self, name: str, body: bytes) -> None:
        srv = self.server
        if name == "echo-auth":
            return self._send(401, {"error": f"bad credentials {self.headers.get('Authorization')}"})
        if name in ("echo-auth-500", "always503"):
            status = 500 if name == "echo-auth-500" else 503
            return self._send(status, {"error": f"server error for {self.headers.get('Authorization')}"})
        if name not in ("ok", "slowok", "flaky", "detector", *GARBAGE):
            return self._send(404, {"error": f"Model {name} not found"})
        request = json.loads(body)["inputs"][0]
        x = np.asarray(request["data"], dtype=np.float32).reshape(request["shape"])
        if name == "flaky" and self._fail(body):
            return None
        if name == "slowok":
            time.sleep(srv.slow_seconds / 10)
        if name in GARBAGE:
            return self._garbage(name, x)
        if name == "detector":
            return self._detections(x)
        scores = srv.score(x)
        self._send(200, {"model_name": name, "outputs": [
            {"name": "scores", "shape": list(scores.shape), "datatype": "FP64", "data": scores.ravel().tolist()}]})

    def _detections(self, x: np.ndarray) -> None:
        from tests.servers.toy_models import toy_detector

        with self.server.lock:
            self.server.rows_scored += len(x)
        out = toy_detector(x)
        types = {"boxes": "FP32", "scores": "FP64", "labels": "INT64"}
        self._send(200, {"model_name": "detector", "outputs": [
            {"name": k, "shape": list(v.shape), "datatype": types[k],
             "data": (v.astype(np.int64) if types[k] == "INT64" else v).ravel().tolist()} for k, v in out.items()]})

    def _fail(self, body: bytes) -> bool:
        """True when this attempt was made to fail (and the failure already happened)."""
        srv = self.server
        digest = hashlib.sha256(body).digest()
        key = digest.hex()
        with srv.lock:
            attempt = srv.attempts[key]
            srv.attempts[key] += 1
        if attempt >= digest[0] % 3:
            return False
        mode = ("503", "drop", "slow")[(digest[1] + attempt) % 3]
        with srv.lock:
            srv.failures[mode] += 1
        if mode == "503":
            self._send(503, {"error": "overloaded, try again"})
        elif mode == "drop":
            self.close_connection = True
            self.connection.close()
        else:
            time.sleep(srv.slow_seconds)
            self._send(503, {"error": "too late"})
        return True

    def _garbage(self, name: str, x: np.ndarray) -> None:
        n, k = len(x), len(self.server.weights)
        out = {"name": "scores", "shape": [n, k], "datatype": "FP64", "data": [0.5] * (n * k)}
        if name == "html":
            return self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if name == "no-outputs":
            return self._send(200, {"model_name": name, "id": "1"})
        if name == "bad-shape":
            out["shape"] = "n by k"
        elif name == "wrong-rows":
            out["shape"], out["data"] = [n + 1, k], [0.5] * ((n + 1) * k)
        elif name == "short-data":
            out["data"] = out["data"][:-1]
        elif name == "nan":
            out["data"] = [float("nan")] * (n * k)
        elif name == "strings":
            out["datatype"], out["data"] = "BYTES", ["cat"] * (n * k)
        self._send(200, {"model_name": name, "outputs": [out]})

    def _send(self, status: int, payload, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) first
            self.close_connection = True
