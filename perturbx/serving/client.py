"""A client of the explainer, standard library and numpy only: build a request, send it, read the answer.

>>> body = request_body(x, target=[1, 3], max_queries=2000)          # x: (3, 64, 64) or (N, 3, 64, 64)
>>> status, answer = post("http://127.0.0.1:8081", "demo-cnn-explainer", body)
>>> out = read_response(answer)
>>> out["attributions"].shape, out["parameters"]["method"]           # (N, T, H, W), 'RISE'
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
           "BOOL": bool}


def request_body(x: np.ndarray, *, input_name: str = "input-0", target: object = None,
                 max_queries: int | None = None, deadline_s: float | None = None) -> dict[str, Any]:
    """The V2 request explaining ``x``: one sample ``(C, H, W)`` or a batch ``(N, C, H, W)``, sent as FP32.

    Parameters
    ----------
    x : ndarray
        Float samples in the range the model takes.
    input_name : str
        Name of the input tensor (the predictor's).
    target, max_queries, deadline_s : optional
        Request parameters (:mod:`perturbx.serving.protocol`); None leaves the configured ones.
    """
    x = np.asarray(x, dtype=np.float32)
    parameters = {k: v for k, v in (("target", target), ("max_queries", max_queries), ("deadline_s", deadline_s))
                  if v is not None}
    body: dict[str, Any] = {"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.ravel().tolist()}]}
    if parameters:
        body["parameters"] = parameters
    return body


def post(url: str, model: str, body: dict[str, Any], *, timeout: float = 120.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``{url}/v2/models/{model}/infer``; the HTTP status and the JSON answer (errors included).

    Raises
    ------
    OSError
        The server could not be reached, or did not answer within ``timeout`` seconds.
    """
    path = f"{url.rstrip('/')}/v2/models/{urllib.parse.quote(model, safe='')}/infer"
    request = urllib.request.Request(path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        data = err.read()
        try:
            return err.code, json.loads(data)
        except ValueError:
            return err.code, {"error": data.decode("utf-8", "replace")}


def read_response(answer: dict[str, Any]) -> dict[str, Any]:
    """The outputs of an explainer's answer as arrays by name, and its ``parameters`` (``params`` parsed)."""
    out: dict[str, Any] = {}
    for tensor in answer["outputs"]:
        dtype = _DTYPES.get(tensor["datatype"], np.float64)
        out[tensor["name"]] = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    parameters = dict(answer.get("parameters") or {})
    if isinstance(parameters.get("params"), str):
        parameters["params"] = json.loads(parameters["params"])
    out["parameters"] = parameters
    return out
