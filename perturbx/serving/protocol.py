"""Open Inference Protocol (V2) messages of the explainer, as JSON-like dicts.

Request: the predictor's own request (one input tensor ``(N, *sample_shape)``, or one sample
without the batch axis), with optional parameters ``target`` (a target spec), ``max_queries``
and ``deadline_s``::

    {"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [...]}],
     "parameters": {"target": [1, 3], "max_queries": 2000}}

Response: the maps and what made them, one row per sample::

    outputs      attributions (N, T, H, W) FP32/FP64, targets (N, T) INT64, scores (N, T) FP64,
                 n_queries (N,) INT64, seconds (N,) FP64, converged (N,) BOOL,
                 estimated_error (N,) FP64 (methods run with a tolerance)
    parameters   method, params (JSON text), config (fingerprint), cached, budget_exhausted,
                 max_queries, perturbx_version
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ServingError
from .service import Answer

FLOAT_TYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_INT_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_EXAMPLE = '{"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [...]}]}'


def decode_request(payload: Mapping[str, Any], *, input_name: str | None, sample_ndim: int,
                   sample_shape: tuple[int, ...] | None, max_batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The samples ``(N, *sample_shape)`` float32 and the parameters of a V2 request.

    Raises
    ------
    ServingError
        400 naming what is wrong (no input, an unknown input name, a datatype other than
        FP16/FP32/FP64, a shape that does not match the data or the model, NaN values); 413
        for more than ``max_batch`` samples.
    """
    tensor = _pick_input(payload.get("inputs"), input_name)
    name = tensor.get("name")
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise ServingError(f"Input {name!r} has shape {shape!r}; a shape is a list of non-negative ints.")
    if datatype not in FLOAT_TYPES:
        hint = (" Raw integer pixels are refused, not rescaled: send floats in the range the model takes "
                "(e.g. pixels / 255)." if datatype in _INT_TYPES else "")
        raise ServingError(f"Input {name!r} has datatype {datatype!r}; this explainer takes "
                           f"{sorted(FLOAT_TYPES)}.{hint}")
    if len(shape) not in (sample_ndim, sample_ndim + 1):
        raise ServingError(f"Input {name!r} has shape {shape} ({len(shape)} axes); this explainer takes a batch "
                           f"[N, *sample] of {sample_ndim + 1} axes or one sample of {sample_ndim}.")
    values = _values(tensor.get("data"), name, shape)
    x = values.reshape(shape) if len(shape) == sample_ndim + 1 else values.reshape([1, *shape])
    if sample_shape is not None and tuple(x.shape[1:]) != tuple(sample_shape):
        raise ServingError(f"Input {name!r} has samples of shape {list(x.shape[1:])}; the model takes "
                           f"{list(sample_shape)} (send shape [N, {', '.join(map(str, sample_shape))}]).")
    if not 1 <= len(x) <= max_batch:
        raise ServingError(f"Input {name!r} holds {len(x)} samples; send 1 to {max_batch} per request.",
                           413 if len(x) > max_batch else 400)
    if not np.all(np.isfinite(x)):
        raise ServingError(f"Input {name!r} has {int(np.size(x) - np.isfinite(x).sum())} NaN or infinite values; "
                           f"explanations need finite input.")
    return x.astype(np.float32), dict(payload.get("parameters") or {})


def _pick_input(inputs: object, input_name: str | None) -> Mapping[str, Any]:
    if not isinstance(inputs, list) or not inputs:
        raise ServingError(f"The request has no input tensor; send one, e.g. {_EXAMPLE}.")
    names = [t.get("name") if isinstance(t, Mapping) else None for t in inputs]
    if input_name is not None:
        if input_name not in names:
            raise ServingError(f"The request has no input named {input_name!r} (its inputs: {names}); this "
                               f"explainer reads the input {input_name!r}.")
        return inputs[names.index(input_name)]
    if len(inputs) > 1:
        raise ServingError(f"The request has {len(inputs)} inputs {names}; this explainer reads one. Send one "
                           f"input, or name it in the configuration (parameters.extra.input_name).")
    if not isinstance(inputs[0], Mapping):
        raise ServingError(f"The request's input must be an object with name, shape, datatype and data. Got "
                           f"{type(inputs[0]).__name__}.")
    return inputs[0]


def _values(data: object, name: object, shape: list[int]) -> np.ndarray:
    try:
        values = np.asarray(data, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ServingError(f"Input {name!r} has data that is not a (flat or nested) list of numbers.") from None
    if values.size != math.prod(shape):
        raise ServingError(f"Input {name!r} has {values.size} values but its shape {shape} needs "
                           f"{math.prod(shape)}.")
    return values


def encode_response(answer: Answer, *, model_name: str, model_version: str | None, request_id: str | None,
                    fingerprint: str) -> dict[str, Any]:
    """The V2 response of an :class:`~perturbx.serving.service.Answer`."""
    from perturbx import __version__

    maps_type = "FP32" if answer.attributions.dtype == np.float32 else "FP64"
    outputs = [_tensor("attributions", answer.attributions, maps_type), _tensor("targets", answer.targets, "INT64"),
               _tensor("scores", answer.scores, "FP64"), _tensor("n_queries", answer.n_queries, "INT64"),
               _tensor("seconds", answer.seconds, "FP64"), _tensor("converged", answer.converged, "BOOL")]
    if answer.estimated_error is not None:
        outputs.append(_tensor("estimated_error", answer.estimated_error, "FP64"))
    parameters = {"method": answer.method, "params": json.dumps(answer.params, sort_keys=True),
                  "config": fingerprint[:16], "cached": answer.cached, "budget_exhausted": answer.budget_exhausted,
                  "perturbx_version": __version__}
    if answer.max_queries is not None:
        parameters["max_queries"] = int(answer.max_queries)
    return {"model_name": model_name, "model_version": model_version, "id": request_id, "parameters": parameters,
            "outputs": outputs}


def _tensor(name: str, values: np.ndarray, datatype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": values.ravel().tolist()}
