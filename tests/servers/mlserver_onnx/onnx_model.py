"""MLServer custom runtime: an ONNX classifier (the demo CNN exported by the tests) on ONNX Runtime.

Runs inside MLServer's own virtual environment (tests/servers/setup_mlserver.sh), which has
MLServer, onnxruntime and numpy but not perturbx or torch. The model file is the ``uri``
parameter of model-settings.json. Inference runs in a thread (ONNX Runtime releases the
GIL), so concurrent requests overlap their JSON decoding with the model. The optional
``parameters.extra.latency_ms`` delays every answer without using the CPU, to stand in for
the round trip to a server on another machine (benchmarks only).
"""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxClassifier(MLModel):
    """One FP32 input tensor (N, C, H, W) in, scores (N, n_classes) out as output "scores"."""

    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        extra = (self._settings.parameters.extra if self._settings.parameters else None) or {}
        self._latency = float(extra.get("latency_ms", 0)) / 1000  # simulated network round trip
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._latency:
            await asyncio.sleep(self._latency)
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(None, self._run, x)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("scores", scores)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: x})[0]
