"""JSON specifications of what the service builds: targets, and Python objects named ``module:attr``.

A target spec is what ``target=`` takes, written in JSON: ``null`` (the method's default,
the top class for a classifier), an int or a list of ints (classes), or an object with a
``kind`` and the keyword arguments of that :mod:`perturbx.targets` class::

    {"kind": "class", "index": [1, 3], "score": "log_odds"}
    {"kind": "output", "index": 0, "output": "value"}
    {"kind": "region", "mask": [[0, 1], [1, 1]], "channel": 2}
    {"kind": "similarity", "reference": [0.1, 0.5, ...], "metric": "cosine"}
    {"kind": "detection", "box": [4, 4, 12, 12], "min_score": 0.5}
    {"kind": "function", "fn": "mypkg.targets:margin"}      (configuration only, never from a request)
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from perturbx.targets import Class, Detection, Function, Output, Region, Similarity

#: the target kinds a spec may name, and their classes (``function`` is handled apart)
TARGET_KINDS: dict[str, type] = {"class": Class, "output": Output, "region": Region, "similarity": Similarity,
                                 "detection": Detection}
#: spec fields given as arrays to the target classes
_ARRAY_FIELDS = {"mask", "reference", "box"}


def parse_target(spec: object, where: str, *, allow_function: bool = False) -> object:
    """A value for ``explain(..., target=)`` from its JSON spec (see the module docstring).

    Parameters
    ----------
    spec : None, int, list of int, dict or str
        A str is parsed as JSON first (V2 request parameters are often strings).
    where : str
        How messages name the spec (``"the request parameter 'target'"``).
    allow_function : bool
        Whether ``{"kind": "function", "fn": "module:attr"}`` may import code (configuration only).

    Raises
    ------
    ValueError, TypeError
        Naming ``where``, the spec and what was expected.
    """
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            raise ValueError(f"{where} must be JSON: null, a class index, a list of class indices or an object "
                             f"with a 'kind'. Got the string {spec!r}.") from None
    if spec is None or (isinstance(spec, int) and not isinstance(spec, bool)):
        return spec
    if isinstance(spec, list) and spec and all(isinstance(v, int) and not isinstance(v, bool) for v in spec):
        return list(spec)
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise TypeError(f"{where} must be null, a class index, a non-empty list of class indices or an object "
                        f"with a 'kind' (one of {[*TARGET_KINDS, 'function']}). Got {_short(spec)}.")
    kind, kwargs = str(spec["kind"]).lower(), {k: v for k, v in spec.items() if k != "kind"}
    if kind == "function":
        return _function_target(kwargs, where, allow_function)
    if kind not in TARGET_KINDS:
        raise ValueError(f"{where} has kind {spec['kind']!r}; the kinds are {[*TARGET_KINDS, 'function']}.")
    if kind == "output" and isinstance(kwargs.get("index"), list):
        kwargs["index"] = [tuple(v) if isinstance(v, list) else v for v in kwargs["index"]]
    try:
        kwargs = {k: (np.asarray(v, dtype=np.float64) if k in _ARRAY_FIELDS and v is not None else v)
                  for k, v in kwargs.items()}
        return TARGET_KINDS[kind](**kwargs)
    except TypeError as exc:
        raise TypeError(f"{where} ({kind}) has arguments {sorted(kwargs)} that "
                        f"perturbx.targets.{TARGET_KINDS[kind].__name__} does not take: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{where} ({kind}) is invalid: {exc}") from None


def _function_target(kwargs: dict[str, Any], where: str, allowed: bool) -> Function:
    if not allowed:
        raise ValueError(f"{where} may not be of kind 'function': a request cannot name code to import. Configure "
                         f"it in parameters.extra.target of model-settings.json instead.")
    fn = import_object(kwargs.pop("fn", None), f"{where}.fn")
    try:
        return Function(fn, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{where} (function) is invalid: {exc}") from None


def import_object(spec: object, where: str, base_dir: str | Path | None = None) -> Any:
    """The object named by ``"package.module:attr"`` or ``"path/to/file.py:attr"``.

    A relative file path is taken from ``base_dir`` (the folder of model-settings.json).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{where} must name an object as 'package.module:attr' or 'path/to/file.py:attr'. "
                         f"Got {spec!r}.")
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise ValueError(f"{where}={spec!r}: the file {str(path)!r} does not exist.")
        module = _load_file(path)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"{where}={spec!r}: cannot import module {module_name!r} ({exc}).") from exc
    if not hasattr(module, attr):
        raise ValueError(f"{where}={spec!r}: module {module_name!r} has no attribute {attr!r}.")
    return getattr(module, attr)


def _load_file(path: Path) -> Any:
    """The module of a .py file, loaded once per path (under a name made from the path)."""
    name = "perturbx_serving_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
