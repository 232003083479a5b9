"""What the service builds from its configuration: the explainer class and the predictor's adapters.

Each running explanation holds an adapter of its own (a :class:`Slot`), so the query count of
an :class:`~perturbx.Explanation` is its own and a deadline can stop it between model calls.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

from perturbx.adapters import ONNX, Adapter, Callable, Remote, as_adapter

from .config import WHERE, ServingConfig
from .errors import ConfigError, DeadlineError
from .specs import import_object

_ADAPTERS = {"remote": Remote, "onnx": ONNX, "callable": Callable}


def explainer_class(method: str, base_dir: str | None = None) -> type:
    """The explainer class of a registry name or ``"package.module:Class"``."""
    from perturbx import registry
    from perturbx.explainer import Explainer

    where = f"{WHERE}.method"
    if ":" in method:
        cls = import_object(method, where, base_dir)
    else:
        try:
            cls = registry.METHODS[registry.canonical_name(method)].load()
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except ImportError as exc:
            raise ConfigError(f"{where}={method!r} cannot be imported in this server's environment ({exc}); "
                              f"gradient and mask-optimisation methods need PyTorch installed there.") from None
    if not (isinstance(cls, type) and issubclass(cls, Explainer)):
        raise ConfigError(f"{where}={method!r} is not a perturbx explainer class.")
    return cls


def build_adapter(config: ServingConfig) -> Adapter:
    """A new adapter for the configured model (one per :class:`Slot`)."""
    spec = dict(config.model)
    kind = spec.pop("kind")
    where = f"{WHERE}.model"
    if kind == "factory":
        factory = import_object(spec.pop("factory"), f"{where}.factory", config.base_dir)
        made = factory(**(spec.pop("kwargs", None) or {}))
        return made if isinstance(made, Adapter) else as_adapter(made)
    cls = _ADAPTERS[kind]
    if kind == "remote":
        token = spec.pop("token", None)
        if token is not None:
            spec["headers"] = {**(spec.get("headers") or {}), "Authorization": f"Bearer {token}"}
        args = (spec.pop("url"),)
    elif kind == "onnx":
        args = (_path(spec.pop("path"), config.base_dir),)
    else:
        args = (import_object(spec.pop("fn"), f"{where}.fn", config.base_dir),)
    if kind == "remote" and "cache_dir" in spec:
        spec["cache_dir"] = _path(spec["cache_dir"], config.base_dir)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(spec) - accepted)
    if unknown:
        raise ConfigError(f"{where} has field(s) {unknown} that perturbx.adapters.{cls.__name__} does not take; "
                          f"it takes {sorted(accepted - {'self'})}.")
    if "sample_shape" in spec and spec["sample_shape"] is not None:
        spec["sample_shape"] = tuple(spec["sample_shape"])
    return cls(*args, **spec)


def _path(value: Any, base_dir: str | None) -> str:
    path = Path(os.path.expanduser(str(value)))
    return str(path if path.is_absolute() or base_dir is None else Path(base_dir) / path)


class Slot:
    """One adapter and the deadline of the explanation that holds it.

    Every model call through :attr:`adapter` first checks :attr:`deadline` (a
    ``time.monotonic()`` value), so an explanation past its deadline stops at its next
    model call instead of running on after its answer (HTTP 504) has gone.
    """

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.deadline = float("inf")
        forward = adapter._forward

        def guarded(batch):
            if time.monotonic() > self.deadline:
                raise DeadlineError("the request's deadline passed while the explanation was running")
            return forward(batch)

        adapter._forward = guarded  # this slot's adapter only: the class is untouched

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self.adapter.sample_shape

    def close(self) -> None:
        close = getattr(self.adapter, "close", None)
        if close is not None:
            close()
