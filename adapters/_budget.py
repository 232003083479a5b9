"""A query budget shared by every copy of an adapter: threads through a lock, processes through a file.

``compare(n_jobs=...)`` gives each thread a copy of the adapter and ``explain_dataset``
pickles it into worker processes; a counter kept on each copy would let the copies send
``n_jobs`` times ``max_queries`` rows between them. A :class:`SharedBudget` is one counter:
copies made with ``copy.copy`` share the object (and its lock), and the first time it is
pickled it moves its count to a small file that every process then updates under an
exclusive ``fcntl`` lock. Worker processes on other machines (a Dask cluster) cannot see
that file: each machine then keeps its own count.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading

from perturbx.errors import QueryBudgetError


class SharedBudget:
    """At most ``limit`` rows in all, across copies, threads and processes of one machine.

    Parameters
    ----------
    limit : int
    owner : str
        How errors name the adapter.
    """

    def __init__(self, limit: int, owner: str = "the adapter") -> None:
        self.limit, self.owner = int(limit), owner
        self._used = 0
        self._path: str | None = None
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Rows reserved so far by every copy."""
        if self._path is None:
            return self._used
        with self._lock, open(self._path, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            return _read(f)

    def reserve(self, n_rows: int) -> None:
        """Count ``n_rows`` more, or raise :class:`~perturbx.QueryBudgetError` (and count nothing)."""
        with self._lock:
            if self._path is None:
                self._used = self._take(self._used, n_rows)
                return
            with open(self._path, "r+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
                used = self._take(_read(f), n_rows)
                f.seek(0)
                f.write(str(used).encode().ljust(20))
                f.flush()

    def _take(self, used: int, n_rows: int) -> int:
        if used + n_rows > self.limit:
            raise QueryBudgetError(f"{self.owner} would send {n_rows} more rows but {used} of its "
                                   f"max_queries={self.limit} are already used (by every copy of it, in every "
                                   f"thread and worker process); raise max_queries or use cache_dir= to reuse "
                                   f"earlier answers.")
        return used + n_rows

    def __getstate__(self) -> dict:
        with self._lock:
            if self._path is None:  # from now on this object and every unpickled copy count in one file
                fd, self._path = tempfile.mkstemp(prefix="perturbx-budget-", suffix=".count")
                with os.fdopen(fd, "wb") as f:
                    f.write(str(self._used).encode().ljust(20))
        return {"limit": self.limit, "owner": self.owner, "_path": self._path}

    def __setstate__(self, state: dict) -> None:
        self.limit, self.owner, self._path = state["limit"], state["owner"], state["_path"]
        self._used = 0
        self._lock = threading.Lock()


def _read(f) -> int:
    f.seek(0)
    text = f.read().strip()
    return int(text) if text else 0
