"""On-disk cache of model answers, one entry per input row (SQLite, standard library).

A key is the SHA-256 of what identifies the endpoint (URL, model, protocol, input and
output names; see ``Remote``) and of the row's bytes, dtype and shape. So a rerun, a
second explainer or another batch size never sends an input the server has already
scored. The value is the row's answer: a vector of scores as plain float64 bytes, or (an
output of another shape, several named outputs) a small JSON header with the names and
shapes followed by the float64 values (:func:`encode_row`). SQLite in WAL mode makes writes
atomic and lets several processes (joblib workers) share one cache file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable

import numpy as np

_FILE = "remote-cache.sqlite"
_CHUNK = 500  # keys per SELECT (SQLite allows 999 parameters by default on old builds)
_MAGIC = b"\x93PXR"  # starts a value with a header (a shaped or named row)


def encode_row(row: np.ndarray | dict[str, np.ndarray]) -> bytes:
    """A row's answer as bytes: a 1-D score vector as plain float64 bytes, anything else with a header."""
    if isinstance(row, np.ndarray) and row.ndim == 1:
        return np.ascontiguousarray(row, dtype=np.float64).tobytes()
    parts = row if isinstance(row, dict) else {"": row}
    header = json.dumps({"names": list(parts) if isinstance(row, dict) else None,
                         "shapes": [list(np.shape(v)) for v in parts.values()]}).encode()
    body = b"".join(np.ascontiguousarray(v, dtype=np.float64).tobytes() for v in parts.values())
    return _MAGIC + struct.pack("<I", len(header)) + header + body


def decode_row(value: bytes) -> np.ndarray | dict[str, np.ndarray]:
    """Inverse of :func:`encode_row`."""
    if not value.startswith(_MAGIC):
        return np.frombuffer(value, dtype=np.float64).copy()
    (size,) = struct.unpack("<I", value[4:8])
    header = json.loads(value[8:8 + size])
    flat = np.frombuffer(value[8 + size:], dtype=np.float64)
    arrays, start = [], 0
    for shape in header["shapes"]:
        n = int(np.prod(shape)) if shape else 1
        arrays.append(flat[start:start + n].reshape(shape).copy())
        start += n
    return arrays[0] if header["names"] is None else dict(zip(header["names"], arrays, strict=True))


class ResponseCache:
    """Row-level score cache stored in ``directory/remote-cache.sqlite``.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    namespace : bytes
        Identifies the endpoint; mixed into every key.
    """

    def __init__(self, directory: str | os.PathLike, namespace: bytes) -> None:
        self.directory = os.fspath(directory)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "namespace": self.namespace}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], state["namespace"])

    @property
    def path(self) -> str:
        return os.path.join(self.directory, _FILE)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            os.makedirs(self.directory, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
            self._conn = conn
        return self._conn

    def keys(self, batch: np.ndarray) -> list[bytes]:
        """One key per row of ``batch`` ``(n, *sample_shape)``."""
        head = self.namespace + f"|{batch.dtype.str}|{batch.shape[1:]}|".encode()
        rows = np.ascontiguousarray(batch)
        return [hashlib.sha256(head + rows[i].tobytes()).digest() for i in range(len(rows))]

    def get_many(self, keys: list[bytes]) -> dict[bytes, np.ndarray | dict[str, np.ndarray]]:
        """Cached answers (score rows ``(n_classes,)`` float64, or shaped/named rows) of the keys present."""
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            conn = self._connect()
            for i in range(0, len(keys), _CHUNK):
                part = keys[i:i + _CHUNK]
                marks = ",".join("?" * len(part))
                for key, value in conn.execute(f"SELECT key, value FROM scores WHERE key IN ({marks})", part):
                    found[bytes(key)] = decode_row(bytes(value))
        return found

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray | dict[str, np.ndarray]]]) -> None:
        """Store answers (see :func:`encode_row`); one transaction."""
        rows = [(k, encode_row(v)) for k, v in items]
        if not rows:
            return
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO scores (key, value) VALUES (?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._connect().execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
