"""An HTTP proxy in front of a real model server that fails, slows or guards requests on purpose (standard library).

It forwards every ``POST`` to the upstream server (MLServer serving the demo CNN) and answers
with the upstream's answer, except:

- ``fail_rate``: a request body whose hash falls in that share fails its *first* attempt (every
  retry succeeds), in turn as HTTP 503, a dropped connection (closed without an answer) or HTTP
  500; so the share of failed requests is ``fail_rate`` of the distinct requests, decided by the
  body and not by timing, and a client that retries gets every answer;
- ``delay_s``: every answer comes that many seconds late;
- ``require_token``: a request without ``Authorization: Bearer <token>`` gets HTTP 401 with the
  header it sent in the error body, as a careless server would (the explainer must not pass it on).

Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy(ThreadingHTTPServer):
    """Start with ``with FaultProxy(upstream_url, fail_rate=0.3) as proxy: proxy.url``."""

    daemon_threads = True

    def __init__(self, upstream: str, *, fail_rate: float = 0.0, delay_s: float = 0.0,
                 require_token: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fail_rate, self.delay_s, self.require_token = fail_rate, delay_s, require_token
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.n_requests = self.n_forwarded = self.n_unauthorized = 0
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def n_distinct(self) -> int:
        """Distinct request bodies seen."""
        return len(self.attempts)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with srv.lock:
            srv.n_requests += 1
        if srv.require_token and self.headers.get("Authorization") != f"Bearer {srv.require_token}":
            with srv.lock:
                srv.n_unauthorized += 1
            return self._send(401, json.dumps({"error": f"bad credentials {self.headers.get('Authorization')}"}
                                              ).encode())
        if self._fail(body):
            return None
        if srv.delay_s:
            time.sleep(srv.delay_s)
        status, data = self._forward(body)
        with srv.lock:
            srv.n_forwarded += 1
        return self._send(status, data)

    def _fail(self, body: bytes) -> bool:
        """True when this attempt was made to fail (and the failure already happened)."""
        srv = self.server
        digest = hashlib.sha256(body).digest()
        with srv.lock:
            attempt = srv.attempts[digest.hex()]
            srv.attempts[digest.hex()] += 1
        if attempt > 0 or int.from_bytes(digest[:4], "big") % 10_000 >= srv.fail_rate * 10_000:
            return False
        mode = ("503", "drop", "500")[digest[4] % 3]
        with srv.lock:
            srv.failures[mode] += 1
        if mode == "drop":
            self.close_connection = True
            self.connection.close()
        else:
            self._send(int(mode), json.dumps({"error": "injected failure"}).encode())
        return True

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _send(self, status: int, data: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first
            self.close_connection = True
