"""The explainer's configuration: ``parameters.extra`` of an MLServer model-settings.json.

::

    {"method": "rise",                                   registry name, or "package.module:Class"
     "params": {"n_masks": 2000, "random_state": 0},     the explainer's keyword arguments (baseline too)
     "target": null,                                     target rule (perturbx.serving.specs)
     "model": {"url": "http://predictor:8080", "model": "demo-cnn", "token_env": "PREDICTOR_TOKEN",
               "sample_shape": [3, 64, 64], "batch_size": 32, "concurrency": 4},
     "input_name": null,                                 the request's input tensor (null: its only one)
     "limits": {"max_queries": 4000, "deadline_s": 30, "on_budget": "error", "max_concurrency": 2,
                "max_queue": 16, "max_batch": 16, "cache_size": 128},
     "allow_request_target": true,
     "threads": 1}

``model`` is the predictor: ``{"kind": "remote", "url", "model", ...}`` (the default kind when
``url`` is given; any :class:`perturbx.adapters.Remote` argument, plus ``token``, a bearer
token written in the file), ``{"kind": "onnx", "path": "model.onnx", ...}``, ``{"kind":
"callable", "fn": "package.module:predict", ...}`` or ``{"kind": "factory", "factory":
"package.module:make_adapter", "kwargs": {...}}`` (any adapter, a ``Torch`` one included).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

WHERE = "parameters.extra"
#: the model kinds and the key that names what each loads
MODEL_KINDS = {"remote": "url", "onnx": "path", "callable": "fn", "factory": "factory"}
ON_BUDGET = ("error", "partial")


@dataclass(frozen=True)
class Limits:
    """What one request may cost, and how many run at once.

    Attributes
    ----------
    max_queries : int or None
        Model queries one explanation (one sample) may make, the unperturbed input included;
        a request may ask for fewer (request parameter ``max_queries``), never more.
    deadline_s : float
        Seconds from a request's arrival to its answer, waiting for a free slot included; a
        request may ask for less (``deadline_s``). Past it the answer is HTTP 504.
    on_budget : {"error", "partial"}
        When an explanation needs more than ``max_queries``: "error" answers HTTP 422;
        "partial" answers with what the method has after the budget (sampling methods with
        ``tolerance``: RISE, LIME, KernelSHAP, ...; ``converged`` is false) and HTTP 422
        for the others.
    max_concurrency : int
        Explanations running at once (each holds its own adapter: the predictor sees at
        most ``max_concurrency * concurrency`` requests in flight from this runtime).
    max_queue : int
        Requests waiting for a slot; one more is answered HTTP 503 at once.
    max_batch : int
        Samples in one request (HTTP 413 above).
    cache_size : int
        Answers kept in memory, keyed by input, request options and configuration (0: no cache).
    """

    max_queries: int | None = None
    deadline_s: float = 60.0
    on_budget: str = "error"
    max_concurrency: int = 2
    max_queue: int = 16
    max_batch: int = 16
    cache_size: int = 128

    @classmethod
    def from_dict(cls, raw: object) -> Limits:
        where = f"{WHERE}.limits"
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be an object. Got {type(raw).__name__}.")
        _check_keys(raw, {f.name for f in fields(cls)}, where)
        limits = cls(**raw)
        if limits.max_queries is not None:
            _int(limits.max_queries, f"{where}.max_queries", 2)
        _positive(limits.deadline_s, f"{where}.deadline_s")
        if limits.on_budget not in ON_BUDGET:
            raise ConfigError(f"{where}.on_budget must be one of {ON_BUDGET}. Got {limits.on_budget!r}.")
        _int(limits.max_concurrency, f"{where}.max_concurrency", 1)
        _int(limits.max_queue, f"{where}.max_queue", 0)
        _int(limits.max_batch, f"{where}.max_batch", 1)
        _int(limits.cache_size, f"{where}.cache_size", 0)
        return limits


@dataclass(frozen=True)
class ServingConfig:
    """One explainer as a service; see the module docstring for the JSON form.

    Attributes
    ----------
    method : str
        Registry name (``perturbx methods``) or ``"package.module:Class"`` of any explainer.
    params : dict
        Keyword arguments of the explainer (``random_state`` defaults to 0 where the
        method takes one, so that answers are reproducible and cacheable).
    target : object
        Target spec (:func:`perturbx.serving.specs.parse_target`); None: the method's default.
    model : dict
        The predictor: a model kind (``MODEL_KINDS``) and its arguments.
    input_name : str or None
        Name of the request's input tensor to explain; None: the request's only input.
    limits : Limits
    allow_request_target : bool
        Whether a request may choose its own target (request parameter ``target``).
    threads : int or None
        Threads of numpy's BLAS pools in the server process (None: leave them).
    base_dir : str or None
        Folder that relative paths in ``model`` are taken from (model-settings.json's folder).
    """

    method: str
    params: dict = field(default_factory=dict)
    target: Any = None
    model: dict = field(default_factory=dict)
    input_name: str | None = None
    limits: Limits = field(default_factory=Limits)
    allow_request_target: bool = True
    threads: int | None = None
    base_dir: str | None = None

    @classmethod
    def from_dict(cls, extra: object, base_dir: str | Path | None = None) -> ServingConfig:
        """Validate ``parameters.extra``; a :class:`ConfigError` names the first wrong field."""
        if not isinstance(extra, Mapping):
            raise ConfigError(f"{WHERE} of model-settings.json must be an object with at least 'method' and "
                              f"'model'. Got {type(extra).__name__}.")
        _check_keys(extra, {f.name for f in fields(cls)}, WHERE)
        for key in ("method", "model"):
            if key not in extra:
                raise ConfigError(f"{WHERE}.{key} is missing; see perturbx.serving.config for the fields.")
        if not isinstance(extra["method"], str) or not extra["method"]:
            raise ConfigError(f"{WHERE}.method must be a method name (see 'perturbx methods') or "
                              f"'package.module:Class'. Got {extra['method']!r}.")
        params = extra.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{WHERE}.params must be an object of keyword arguments. Got {type(params).__name__}.")
        threads = extra.get("threads")
        if threads is not None:
            _int(threads, f"{WHERE}.threads", 1)
        base = extra.get("base_dir", base_dir)
        return cls(method=extra["method"], params=dict(params), target=extra.get("target"),
                   model=_model_spec(extra["model"]), input_name=_input_name(extra.get("input_name")),
                   limits=Limits.from_dict(extra.get("limits")),
                   allow_request_target=bool(extra.get("allow_request_target", True)), threads=threads,
                   base_dir=None if base is None else str(base))

    @property
    def model_kind(self) -> str:
        return self.model["kind"]

    def secrets(self) -> list[str]:
        """Strings of the configuration that must never be shown: a literal token and header values."""
        values = [self.model.get("token"), *(self.model.get("headers") or {}).values()]
        values = [v for v in values if isinstance(v, str) and v]
        return values + [part for v in values for part in v.split() if len(part) >= 8]

    def fingerprint(self) -> str:
        """sha256 of everything that decides an answer (secrets and limits other than the budget left out)."""
        model = {k: v for k, v in self.model.items() if k not in ("token", "headers", "token_env")}
        ident = {"method": self.method, "params": self.params, "target": self.target, "model": model,
                 "input_name": self.input_name, "on_budget": self.limits.on_budget}
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=repr).encode()).hexdigest()


def _model_spec(raw: object) -> dict:
    where = f"{WHERE}.model"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be an object: the predictor's url and model name, or a local model "
                          f"({sorted(MODEL_KINDS)}). Got {type(raw).__name__}.")
    spec = dict(raw)
    kind = spec.setdefault("kind", "remote" if "url" in spec else None)
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{where}.kind must be one of {sorted(MODEL_KINDS)} (default 'remote' when 'url' is "
                          f"given). Got {kind!r}.")
    if MODEL_KINDS[kind] not in spec:
        raise ConfigError(f"{where}.{MODEL_KINDS[kind]} is missing: a {kind!r} model needs it.")
    if kind == "remote" and "model" not in spec:
        raise ConfigError(f"{where}.model is missing: the predictor's model name on its server "
                          f"(POST {{url}}/v2/models/{{model}}/infer).")
    token = spec.get("token")
    if token is not None and (not isinstance(token, str) or not token):
        raise ConfigError(f"{where}.token must be a non-empty string (a bearer token); its value is not shown.")
    if token is not None and "Authorization" in (spec.get("headers") or {}):
        raise ConfigError(f"{where} has both 'token' and an Authorization header; keep one.")
    return spec


def _input_name(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{WHERE}.input_name must be a tensor name or null. Got {value!r}.")
    return value


def _check_keys(raw: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {unknown}; the fields are {sorted(known)}.")


def _int(value: object, where: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{where} must be an int >= {minimum}. Got {value!r}.")


def _positive(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ConfigError(f"{where} must be a positive number of seconds. Got {value!r}.")
