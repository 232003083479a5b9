"""HTTP transport of the ``Remote`` adapter: kept-alive connections, retries, secrets kept out of messages.

Standard library only (``http.client``). One persistent connection per thread; a request
that fails with a 5xx or 429 status, a timeout or a dropped connection is retried with
exponential backoff and full jitter, up to ``retries`` times. A 4xx status, a failed TLS
check or an unknown host fails at once. Every message that leaves this module (errors,
log lines) goes through :meth:`Transport.redact`, which blanks header values and the
user-info and query of the URL.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence

logger = logging.getLogger("perturbx.adapters.remote")

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_SNIPPET = 300  # characters of a server's error body quoted in an error message


class RemoteError(RuntimeError):
    """A model server refused a request, or kept failing after every retry.

    Attributes
    ----------
    status : int or None
        The last HTTP status seen (None when the connection itself failed).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponseError(RemoteError, ValueError):
    """A model server answered 2xx with a body that is not what the protocol promises."""


def redact_url(url: str) -> str:
    """``url`` with user-info and query values replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """Client TLS context: system CAs (``True``), a CA bundle file (a path) or no checks (``False``)."""
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=str(verify))


class Transport:
    """POST bytes to one server with retries.

    Parameters
    ----------
    url : str
        Base URL, ``http://`` or ``https://``; its path is a prefix of every request path.
    timeout : float
        Seconds allowed for connecting and for each read.
    retries : int
        Extra attempts after the first, for retryable failures.
    verify : bool or str
        TLS verification (see :func:`tls_context`).
    headers : callable
        Returns the headers of the next request (read at each request, so a rotated token
        in the environment is picked up).
    secrets : callable
        Returns the strings that must never appear in a message.
    backoff, max_backoff : float
        Seconds: the n-th retry waits ``uniform(0, min(max_backoff, backoff * 2**n))``.
    """

    def __init__(self, url: str, *, timeout: float, retries: int, verify: bool | str,
                 headers: Callable[[], dict[str, str]], secrets: Callable[[], Sequence[str]],
                 backoff: float = 0.25, max_backoff: float = 8.0) -> None:
        if not isinstance(url, str):
            raise TypeError(f"The 'url' parameter of Remote must be a str. Got {type(url).__name__} instead.")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The 'url' parameter of Remote must be an http:// or https:// URL with a host. "
                             f"Got {redact_url(url)!r} instead.")
        if parts.username or parts.password:
            raise ValueError(f"The 'url' parameter of Remote must not carry credentials ({redact_url(url)!r}); "
                             f"pass them as headers={{'Authorization': ...}} or token_env= instead.")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.query = parts.query
        self.safe_url = redact_url(url)
        self.timeout, self.retries, self.verify = timeout, retries, verify
        self.backoff, self.max_backoff = backoff, max_backoff
        self._headers, self._secrets = headers, secrets
        self._local = threading.local()
        self._count_lock = threading.Lock()
        self.n_retries = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_local")
        state.pop("_count_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()
        self._count_lock = threading.Lock()

    def redact(self, text: str) -> str:
        """``text`` with every secret (header value, token) replaced by ``***``."""
        for secret in sorted((s for s in self._secrets() if s), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def where(self, path: str) -> str:
        """The redacted URL of ``path``, for messages."""
        return self.safe_url.rstrip("/") + path if not self.query else f"{self.safe_url} ({path})"

    def post(self, path: str, body: bytes) -> bytes:
        """POST ``body`` (JSON) to ``path``; the body of the 2xx answer.

        Raises
        ------
        RemoteError
            On a 4xx status (other than 429), a TLS or name-resolution failure, or when every
            attempt failed.
        """
        last, last_status = "no attempt", None
        for attempt in range(self.retries + 1):
            if attempt:
                with self._count_lock:
                    self.n_retries += 1
                delay = random.uniform(0.0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
                logger.warning("retry %d/%d of %s in %.2f s after %s", attempt, self.retries,
                               self.where(path), delay, last)
                time.sleep(delay)
            try:
                status, data, retry_after = self._send(path, body)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                self._raise_if_fatal(exc, path)
                last = self.redact(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__
                last_status = None
                continue
            if 200 <= status < 300:
                return data
            snippet = self.redact(data[:_SNIPPET].decode("utf-8", "replace"))
            if status not in _RETRY_STATUS:
                raise RemoteError(f"{self.where(path)} answered HTTP {status}: {snippet!r}. "
                                  f"{_hint(status)}", status)
            last, last_status = f"HTTP {status}: {snippet!r}", status
            if retry_after is not None and attempt < self.retries:
                time.sleep(min(retry_after, self.max_backoff))
        raise RemoteError(f"{self.where(path)} failed {self.retries + 1} times (last: {last}); giving up. "
                          f"Raise retries= or timeout=, or check that the server is up.", last_status)

    def _raise_if_fatal(self, exc: BaseException, path: str) -> None:
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise RemoteError(f"TLS certificate verification failed for {self.where(path)}: "
                              f"{self.redact(str(exc))}. For a private CA pass verify='/path/to/ca.pem'; "
                              f"verify=False turns the check off (not recommended).") from None
        if isinstance(exc, socket.gaierror):
            raise RemoteError(f"Cannot resolve the host of {self.safe_url}: {exc}. Check the url.") from None

    def _send(self, path: str, body: bytes) -> tuple[int, bytes, float | None]:
        conn = self._connection()
        target = self.prefix + path + (f"?{self.query}" if self.query else "")
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self._headers()}
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self._drop()
        return resp.status, data, _retry_after(resp.getheader("Retry-After"))

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=tls_context(self.verify))
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _hint(status: int) -> str:
    return {
        400: "The server rejected the request: check input_name, the sample shape and the datatype it expects.",
        401: "Authentication failed: check headers= or token_env=.",
        403: "The credentials were refused: check headers= or token_env=.",
        404: "Not found: check the url, the model name and model_version.",
        413: "The request is too large: lower batch_size.",
    }.get(status, "The request was refused and is not retried.")
