"""Explain a whole data set: results on disk as they finish, resumable, parallel.

:func:`explain_dataset` runs one explainer over many images and writes each finished
explanation to ``out/items/<id>.npz`` at once (written to a temporary file, then renamed:
a reader or a resumed run never sees half a file), and appends a line to
``out/index.jsonl``, the index of what is done. A run killed at any moment and started again
with the same arguments skips every finished image and loses nothing but the images that
were in flight. Work is spread with joblib: ``n_jobs`` processes on this machine (loky), or
a cluster through joblib's ``"dask"`` backend (or Ray's ``"ray"``). The parent process is the
only writer; workers only compute, so a cluster needs no shared file system.

The result is a :class:`DatasetResults`, a lazy sequence that loads an
:class:`~perturbx.Explanation` from disk when it is indexed.

Threads: PyTorch's default (one thread per core) collapses when anything else runs on the
machine, because its threads wait for each other at every operation. Workers therefore pin
torch's threads (:func:`default_threads`, :func:`worker_threads`): ``$PERTURBX_THREADS`` if
set, else half the cores, shared out among the workers of this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import check_int
from .explanation import Explanation
from .images import IMAGE_SUFFIXES, image_files, read_image

__all__ = ["THREADS_ENV", "DatasetResults", "WorkerModel", "default_threads", "explain_dataset", "worker_threads"]

#: Environment variable with the number of torch threads perturbx's own runs use (demo, explain_dataset
#: workers, the test suite)
THREADS_ENV = "PERTURBX_THREADS"

_FORMAT = 1
_MANIFEST, _INDEX, _ERRORS, _ITEMS = "manifest.json", "index.jsonl", "errors.jsonl", "items"


_BUILT: dict[str, Any] = {}  # models of this process, by WorkerModel token


def default_threads() -> int:
    """Torch threads for perturbx's own runs on this machine: ``$PERTURBX_THREADS``, else half the cores.

    Half the cores this process may use (at least 1) holds up when one other busy process
    shares the machine; all of them does not (PyTorch's threads wait for each other at every
    operation, so one thread that loses its core stalls the rest).

    Raises
    ------
    ValueError
        ``$PERTURBX_THREADS`` is set but is not an int >= 1.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"The environment variable {THREADS_ENV} must be an int >= 1 (torch threads). "
                             f"Got {value!r}; unset it for the default (half the cores).")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def worker_threads(n_jobs: int, backend: str | None) -> int | None:
    """Torch threads per image of :func:`explain_dataset`, or None to leave torch as it is.

    One process (``n_jobs=1`` without a backend): None, the caller's setting stands. Local
    workers (loky processes, ``"threading"``): :func:`default_threads` shared out,
    ``max(1, default_threads() // n_jobs)``. A cluster backend (``"dask"``, ``"ray"``...):
    :data:`THREADS_ENV` on the worker, else 1, as its parallelism comes from the workers.
    """
    if n_jobs == 1 and backend is None:
        return None
    if backend in (None, "loky", "multiprocessing", "threading"):
        return max(1, default_threads() // n_jobs)
    return 0  # a cluster worker decides on its own machine (see _pin_threads)


def _pin_threads(threads: int | None) -> None:
    """Set torch's thread count (if torch is loaded) for this worker; 0: ``$PERTURBX_THREADS`` here, else 1."""
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if threads == 0:
        threads = default_threads() if os.environ.get(THREADS_ENV) else 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@contextmanager
def _threads_of_this_process(threads: int | None, backend: str | None):
    """For the threading backend: torch's threads of this process pinned during the run, then restored."""
    torch = sys.modules.get("torch")
    if backend != "threading" or threads is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class WorkerModel:
    """A model built once in each worker process, by calling ``factory()``.

    Use it for a model that should not be pickled and shipped to every task (large
    weights) or that must be created where it runs (a torch module on a worker's GPU).

    Parameters
    ----------
    factory : callable
        ``factory() -> model``: an adapter or anything ``perturbx.adapters.as_adapter``
        takes. Must be picklable (a module-level function, or ``functools.partial`` of one).
    input_layout : {"CHW", "HWC", "HW"}, default "CHW"
        Layout the model takes, used when images are read from files.
    """

    def __init__(self, factory: Callable[[], Any], *, input_layout: str = "CHW") -> None:
        if not callable(factory):
            raise TypeError(f"WorkerModel needs a callable factory() -> model. Got {type(factory).__name__}.")
        self.factory, self.input_layout = factory, input_layout
        self.token = uuid.uuid4().hex

    def get(self):
        """The model of this process (built on first use)."""
        if self.token not in _BUILT:
            from .adapters import as_adapter

            _BUILT[self.token] = as_adapter(self.factory())
        return _BUILT[self.token]


@dataclass(frozen=True)
class _Item:
    id: str
    file: str
    source: Any  # ndarray (one sample) or path
    target: Any


def explain_dataset(explainer, model, images, out: str | os.PathLike, *, n_jobs: int = 1,
                    backend: str | None = None, target: int | Sequence[int] | None = None,
                    labels: Sequence[int] | None = None, loader: Callable[[Path], np.ndarray] | None = None,
                    on_error: str = "raise", overwrite: bool = False, progress: bool | None = None,
                    images_per_task: int = 8) -> DatasetResults:
    """Explain every image, writing each result to ``out`` as soon as it is finished.

    Parameters
    ----------
    explainer : PerturbationExplainer
        Any perturbx explainer; its ``random_state`` must be an int (reproducible) or None.
    model : Adapter, model, or WorkerModel
        What ``explainer.explain`` takes; a :class:`WorkerModel` is built once per worker.
    images : ndarray, folder, or sequence of paths
        An array ``(N, *sample_shape)`` in the model's layout; a folder (its files ending in
        one of :data:`perturbx.images.IMAGE_SUFFIXES`, recursively, in sorted order); or a
        list of such files. Files are read with ``loader(path)`` if given, else with
        :func:`perturbx.images.read_image` in the model's layout (the reader of ``perturbx
        compare``: floats in [0, 1] for integer data, ``.npy`` floats as stored).
    out : str or os.PathLike
        Folder of the results (created). Running again into the same folder resumes.
    n_jobs : int, default 1
        Images explained at once. 1 runs in this process, in order.
    backend : str, optional
        joblib backend: None (loky processes when ``n_jobs > 1``), ``"threading"`` (one
        process, e.g. the one that owns the GPU), ``"dask"`` (needs a ``distributed.Client``)
        or any registered backend such as ``"ray"``.
    target : int, sequence of int, a :mod:`perturbx.targets` target, or None
        What is explained for every image (None: each image's top class).
    labels : sequence, optional
        One target per image instead of ``target``: class indices (for example the
        ground-truth labels) or :mod:`perturbx.targets` targets (a box per image).
    loader : callable, optional
        ``loader(path) -> sample`` in the model's layout, for files.
    on_error : {"raise", "skip"}, default "raise"
        "skip" records a failing image in ``out/errors.jsonl`` and goes on; a later run
        retries it.
    overwrite : bool, default False
        Delete earlier results in ``out`` (only perturbx's files) instead of resuming.
    progress : bool or None
        Show a progress bar over images (None: only on a terminal).
    images_per_task : int, default 8
        Images a task explains together with ``explainer.explain_many`` (their perturbations
        share model batches; the results equal one ``explain`` per image). Results are
        written, and a resumed run restarts, a task at a time; 1 explains image by image.

    Returns
    -------
    DatasetResults
        Lazy sequence of the explanations, in the order of ``images``.
    """
    from .engine import progress_enabled

    _check_explainer(explainer)
    n_jobs = check_int(n_jobs, "n_jobs", "explain_dataset")
    per_task = check_int(images_per_task, "images_per_task", "explain_dataset")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"The 'on_error' parameter of explain_dataset must be 'raise' or 'skip'. Got {on_error!r}.")
    items = _items(images, target, labels)
    store = _Store(Path(out))
    store.open(explainer, target, [it.id for it in items], overwrite)
    todo = store.todo(items)
    spec = _LoadSpec(loader, _layout_of(model))
    from tqdm.auto import tqdm

    blocks = [todo[i:i + per_task] for i in range(0, len(todo), per_task)]
    with _results(explainer, model, blocks, spec, on_error, n_jobs, backend) as results, \
            tqdm(total=len(todo), desc="explain_dataset", unit="image", disable=not progress_enabled(progress)) as bar:
        for records in results:
            for record in records:
                store.record(record)
            bar.update(len(records))
    return DatasetResults(out)


@contextmanager
def _results(explainer, model, blocks, spec, on_error: str, n_jobs: int, backend: str | None):
    """The records of each finished block of items, in the order the blocks finish."""
    if n_jobs == 1 and backend is None:
        yield (_explain_block(explainer, model, b, spec, on_error) for b in blocks)
        return
    from joblib import Parallel, delayed, parallel_config

    threads = worker_threads(n_jobs, backend)
    per_task = None if backend == "threading" else threads  # threads of this process are pinned here, once
    tasks = (delayed(_explain_block)(explainer, model, b, spec, on_error, per_task) for b in blocks)
    if backend is None:
        yield Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks)
        return
    with parallel_config(backend=backend, n_jobs=n_jobs), _threads_of_this_process(threads, backend):
        if _streams_results(backend):
            yield Parallel(return_as="generator_unordered")(tasks)
        else:  # Ray's joblib backend returns lists only: rounds of tasks, each written as it comes back
            yield _in_rounds(list(tasks), 4 * n_jobs)


def _streams_results(backend: str) -> bool:
    """Whether joblib's ``backend`` hands results back as they finish (generators); Ray's does not."""
    from joblib import parallel_config
    from joblib.parallel import get_active_backend

    with parallel_config(backend=backend):
        active, _ = get_active_backend()
    return bool(getattr(active, "supports_return_generator", False))


def _in_rounds(tasks: list, size: int):
    """Run ``tasks`` ``size`` at a time with the active backend; yield each round's results."""
    from joblib import Parallel

    for start in range(0, len(tasks), size):
        yield from Parallel(return_as="list")(tasks[start:start + size])


# -- items -------------------------------------------------------------------------------------------------
def _items(images, target, labels) -> list[_Item]:
    if isinstance(images, np.ndarray) or (hasattr(images, "__array__") and not isinstance(images, (str, Path))):
        arr = np.asarray(images)
        if arr.ndim < 3:
            raise ValueError(f"The 'images' parameter of explain_dataset, given as an array, must be a batch "
                             f"(N, *sample_shape) with at least 3 axes. Got shape {arr.shape}.")
        width = max(6, len(str(len(arr) - 1)))
        ids = [f"{i:0{width}d}" for i in range(len(arr))]
        sources: list[Any] = list(arr)
        files = ids
    else:
        paths = _paths(images)
        root = Path(images) if isinstance(images, (str, os.PathLike)) else None
        ids = [p.relative_to(root).as_posix() if root is not None else str(p) for p in paths]
        files = [_file_name(i) for i in ids]
        sources = paths
    targets = _targets(target, labels, len(ids))
    return [_Item(i, f, s, t) for i, f, s, t in zip(ids, files, sources, targets, strict=True)]


def _paths(images) -> list[Path]:
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if not root.is_dir():
            raise ValueError(f"The 'images' parameter of explain_dataset must be an array, a folder or a list of "
                             f"paths. {os.fspath(root)!r} is not a folder.")
        paths = image_files(root, recursive=True)
        if not paths:
            raise ValueError(f"The folder {os.fspath(root)!r} given as images holds no image files "
                             f"({', '.join(IMAGE_SUFFIXES)}).")
        return paths
    if isinstance(images, Sequence) and images and all(isinstance(p, (str, os.PathLike)) for p in images):
        paths = [Path(p) for p in images]
        missing = [os.fspath(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"explain_dataset: {len(missing)} of the image paths do not exist, e.g. {missing[0]!r}.")
        if len({str(p) for p in paths}) != len(paths):
            raise ValueError("The 'images' parameter of explain_dataset lists the same path twice; each image "
                             "must appear once.")
        return paths
    raise TypeError(f"The 'images' parameter of explain_dataset must be an array (N, *sample_shape), a folder or "
                    f"a non-empty list of paths. Got {type(images).__name__}.")


def _file_name(item_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id)[-80:].lstrip(".")
    return f"{safe}-{hashlib.sha1(item_id.encode()).hexdigest()[:10]}"


def _targets(target, labels, n: int) -> list[Any]:
    from .targets import Target

    if labels is None:
        return [target] * n
    if target is not None:
        raise ValueError("explain_dataset takes either target= (the same for every image) or labels= (one per "
                         "image), not both.")
    items = list(labels) if not isinstance(labels, (str, bytes)) else []
    ints = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items]
    if len(items) != n or not all(i or isinstance(v, Target) for i, v in zip(ints, items, strict=True)):
        raise ValueError(f"The 'labels' parameter of explain_dataset must hold one class index or perturbx.targets "
                         f"target per image ({n}). Got {len(items)} items of types "
                         f"{sorted({type(v).__name__ for v in items})}.")
    return [int(v) if i else v for v, i in zip(items, ints, strict=True)]


def _check_explainer(explainer) -> None:
    if not (hasattr(explainer, "explain") and hasattr(explainer, "get_params")):
        raise TypeError(f"The 'explainer' parameter of explain_dataset must be a perturbx explainer (with "
                        f"explain and get_params). Got {type(explainer).__name__}.")
    if isinstance(getattr(explainer, "random_state", None), np.random.Generator):
        raise ValueError(f"explain_dataset needs the explainer's random_state to be an int or None, so that a "
                         f"result does not depend on which worker explains which image first. Got a Generator; "
                         f"use e.g. {type(explainer).__name__}(..., random_state=0).")


def _layout_of(model) -> str:
    layout = getattr(model, "input_layout", None)
    return layout if isinstance(layout, str) else "CHW"


# -- one image (runs in a worker) --------------------------------------------------------------------------
@dataclass(frozen=True)
class _LoadSpec:
    loader: Callable[[Path], np.ndarray] | None
    layout: str

    def load(self, source) -> np.ndarray:
        if isinstance(source, np.ndarray):
            return source
        if self.loader is not None:
            return np.asarray(self.loader(source))
        return read_image(source, layout=self.layout)


def _explain_block(explainer, model, items: list[_Item], spec: _LoadSpec, on_error: str,
                   threads: int | None = None) -> list[dict]:
    """Explain a block of items (in a worker) with ``explain_many``; one record per item.

    ``threads``: torch threads to pin first (:func:`worker_threads`). An item that cannot be
    read, or (with ``on_error="skip"``) a block that fails, is retried item by item so the
    error lands on the item that caused it.
    """
    adapter = model.get() if isinstance(model, WorkerModel) else model
    _pin_threads(threads)  # after the model is built: a WorkerModel may be the first to import torch
    loaded, records = [], []
    for item in items:
        try:
            loaded.append((item, spec.load(item.source)))
        except Exception as exc:
            if on_error == "raise":
                raise
            records.append(_error(item, exc))
    if not loaded:
        return records
    try:
        explained = explainer.explain_many(adapter, [x for _, x in loaded], [it.target for it, _ in loaded])
    except Exception as exc:
        if on_error == "raise":
            raise
        if len(loaded) == 1:
            return [*records, _error(loaded[0][0], exc)]
        for item, _ in loaded:  # which one failed: again one at a time
            records += _explain_block(explainer, model, [item], spec, on_error)
        return records
    return records + [_record(it, x, e) for (it, x), e in zip(loaded, explained, strict=True)]


def _error(item: _Item, exc: BaseException) -> dict:
    return {"id": item.id, "file": item.file, "error": f"{type(exc).__name__}: {exc}"}


def _record(item: _Item, x: np.ndarray, e) -> dict:
    arrays = {"attributions": np.asarray(e.attributions), "targets": np.asarray(e.targets),
              "scores": np.asarray(e.scores)}
    arrays.update({f"extra_{k}": np.asarray(v) for k, v in e.extras.items() if isinstance(v, np.ndarray)})
    return {"id": item.id, "file": item.file, "arrays": arrays, "n_queries": int(e.n_queries),
            "seconds": float(e.seconds), "method": e.method, "input_sha1": _sha1(x)}


def _sha1(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    return hashlib.sha1(f"{x.dtype.str}{x.shape}".encode() + x.tobytes()).hexdigest()


# -- the folder --------------------------------------------------------------------------------------------
class _Store:
    """``out/``: manifest.json, index.jsonl (one line per finished item), items/<file>.npz."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.items = root / _ITEMS

    def open(self, explainer, target, ids: list[str], overwrite: bool) -> None:
        self.items.mkdir(parents=True, exist_ok=True)
        config = {"method": type(explainer).__name__, "params": _jsonable(explainer.get_params()),
                  "target": _jsonable(target)}
        old = _read_json(self.root / _MANIFEST)
        if overwrite:
            self._clear()
        elif old is not None and {k: old.get(k) for k in config} != config:
            raise ValueError(f"out={os.fspath(self.root)!r} holds results of another configuration "
                             f"({old.get('method')} {old.get('params')}, target={old.get('target')}); pass "
                             f"overwrite=True to replace them or choose another folder.")
        for tmp in self.items.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        self._end_lines()
        _atomic_write_bytes(self.root / _MANIFEST,
                            json.dumps({"format": _FORMAT, **config, "ids": ids}, indent=1).encode())

    def _end_lines(self) -> None:
        """End a torn last line (a kill mid-append) so that new lines start on their own."""
        for name in (_INDEX, _ERRORS):
            path = self.root / name
            if path.is_file() and path.stat().st_size:
                with open(path, "rb+") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")

    def _clear(self) -> None:
        for f in self.items.glob("*.npz"):
            f.unlink()
        for name in (_INDEX, _ERRORS, _MANIFEST):
            (self.root / name).unlink(missing_ok=True)

    def todo(self, items: list[_Item]) -> list[_Item]:
        """Items not finished yet; finished files missing from the index are added to it."""
        done = read_index(self.root)
        for it in items:
            if it.id not in done and _loads(self.items / f"{it.file}.npz"):
                self._append(_INDEX, {"id": it.id, "file": it.file, "recovered": True})
                done[it.id] = {"file": it.file}
        by_id = {it.id: it for it in items}
        for item_id, entry in done.items():
            it = by_id.get(item_id)
            sha = entry.get("input_sha1")
            if it is not None and sha and isinstance(it.source, np.ndarray) and sha != _sha1(it.source):
                raise ValueError(f"out={os.fspath(self.root)!r} holds a result for image {item_id!r} made from "
                                 f"other pixels; pass overwrite=True or choose another folder.")
        return [it for it in items if it.id not in done]

    def record(self, rec: dict) -> None:
        if "error" in rec:
            self._append(_ERRORS, rec)
            return
        buf = _npz_bytes(rec.pop("arrays"))
        _atomic_write_bytes(self.items / f"{rec['file']}.npz", buf)
        self._append(_INDEX, rec)

    def _append(self, name: str, rec: dict) -> None:
        with open(self.root / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _loads(path: Path) -> bool:
    try:
        with np.load(path) as z:
            return "attributions" in z.files
    except Exception:
        return False


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_index(root: str | os.PathLike, name: str = _INDEX) -> dict[str, dict]:
    """Entries of ``root/index.jsonl`` by item id (a torn last line, from a kill, is ignored)."""
    entries: dict[str, dict] = {}
    try:
        lines = (Path(root) / name).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return entries
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec:
            entries[rec["id"]] = rec
    return entries


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return {"array_sha1": _sha1(value)}
    return repr(value)


# -- results -----------------------------------------------------------------------------------------------
class DatasetResults(Sequence):
    """The explanations of a dataset run, read from ``out`` when indexed.

    ``results[i]`` (position in the run's images) or ``results["id"]`` returns an
    :class:`~perturbx.Explanation` (without ``input``); an unfinished image raises
    ``LookupError``. ``len(results)`` counts all images of the run; :attr:`done` those finished.

    Parameters
    ----------
    out : str or os.PathLike
        Folder written by :func:`explain_dataset`.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.root = Path(out)
        manifest = _read_json(self.root / _MANIFEST)
        if manifest is None:
            raise ValueError(f"{os.fspath(self.root)!r} holds no dataset run (no {_MANIFEST}).")
        self.method, self.params = manifest["method"], manifest["params"]
        self.ids: list[str] = list(manifest["ids"])
        self._pos = {item_id: i for i, item_id in enumerate(self.ids)}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the index (another process may still be writing)."""
        self._index = read_index(self.root)
        self.errors: dict[str, str] = {k: v.get("error", "") for k, v in read_index(self.root, _ERRORS).items()
                                       if k not in self._index}

    @property
    def done(self) -> list[str]:
        """Ids of the finished images, in run order."""
        return [i for i in self.ids if i in self._index]

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        item_id = key if isinstance(key, str) else self.ids[key]
        entry = self._index.get(item_id)
        if entry is None:
            why = f" (failed: {self.errors[item_id]})" if item_id in self.errors else ""
            raise LookupError(f"Image {item_id!r} is not finished{why}; run explain_dataset again with the same "
                              f"arguments to resume.")
        return self._load(entry)

    def _load(self, entry: dict) -> Explanation:
        with np.load(self.root / _ITEMS / f"{entry['file']}.npz") as z:
            arrays = {k: z[k] for k in z.files}
        extras = {k[len("extra_"):]: v for k, v in arrays.items() if k.startswith("extra_")}
        return Explanation(attributions=arrays["attributions"], targets=arrays["targets"],
                           n_queries=int(entry.get("n_queries", -1)), seconds=float(entry.get("seconds", np.nan)),
                           method=self.method, params=self.params, scores=arrays["scores"], extras=extras)

    def attributions(self) -> np.ndarray:
        """All maps stacked: ``(N, H, W)`` or ``(N, T, H, W)``; needs a complete run."""
        if not self.complete:
            raise LookupError(f"{len(self.ids) - len(self.done)} of {len(self.ids)} images are not finished; "
                              f"resume the run first.")
        return np.stack([e.attributions for e in self])

    def __repr__(self) -> str:
        return (f"DatasetResults({os.fspath(self.root)!r}, method={self.method}, done={len(self.done)}/{len(self)}, "
                f"errors={len(self.errors)})")
