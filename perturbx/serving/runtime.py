"""The MLServer custom runtime: ``"implementation": "perturbx.serving.PerturbxRuntime"`` in model-settings.json.

It reads its configuration from ``parameters.extra`` (:mod:`perturbx.serving.config`), loads
an :class:`~perturbx.serving.service.ExplanationService` and answers each V2 inference
request with the explanation of its input (:mod:`perturbx.serving.protocol`). Errors are
answered with the status of their :class:`~perturbx.serving.errors.ServingError` and the
body ``{"error": "..."}``, with every secret blanked; each request is logged in one line.

Needs MLServer (``pip install 'perturbx[serve]'``); importing :mod:`perturbx.serving`
does not.
"""

from __future__ import annotations

import logging
import os
import time

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, MetadataTensor

from .config import ServingConfig
from .errors import ServingError, redact
from .protocol import decode_request, encode_response
from .service import ExplanationService

logger = logging.getLogger("mlserver.perturbx")  # MLServer's handlers print it

_OUTPUTS = [("attributions", "FP64", [-1, -1, -1, -1]), ("targets", "INT64", [-1, -1]), ("scores", "FP64", [-1, -1]),
            ("n_queries", "INT64", [-1]), ("seconds", "FP64", [-1]), ("converged", "BOOL", [-1])]


class PerturbxRuntime(MLModel):
    """Answers V2 inference requests with perturbx explanations of their input."""

    async def load(self) -> bool:
        params = self._settings.parameters
        source = getattr(self._settings, "_source", None)
        config = ServingConfig.from_dict((params.extra if params else None) or {},
                                         base_dir=os.path.dirname(source) if source else None)
        self._service = service = ExplanationService(config)
        adapter = repr(service.slots[0].adapter)  # adapters' reprs leave out tokens, headers and URL queries
        logger.info("perturbx explainer %r ready: %s through %s, %s", self.name, service.explainer_cls.__name__,
                    redact(adapter, service.secrets()), config.limits)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        service, start = self._service, time.perf_counter()
        try:
            x, parameters = decode_request(payload.model_dump(), input_name=service.config.input_name,
                                           sample_ndim=service.layout.ndim, sample_shape=service.sample_shape,
                                           max_batch=service.limits.max_batch)
            answer = await service.explain(x, service.options(parameters))
        except ServingError as exc:
            message = redact(exc.message, service.secrets())
            logger.warning("%s: HTTP %d after %.2f s: %s", self.name, exc.status, time.perf_counter() - start, message)
            raise MLServerError(message, exc.status) from None
        except Exception as exc:  # a bug of ours: still an answer, never a secret
            message = redact(f"The explainer failed: {type(exc).__name__}: {exc}", service.secrets())
            logger.exception("%s: HTTP 500: %s", self.name, message)
            raise MLServerError(message, 500) from None
        logger.info("%s: %d sample(s), %d queries, %.2f s%s", self.name, len(x), int(answer.n_queries.sum()),
                    time.perf_counter() - start, " (cached)" if answer.cached else "")
        body = encode_response(answer, model_name=self.name, model_version=self.version, request_id=payload.id,
                               fingerprint=service.fingerprint)
        return InferenceResponse.model_validate(body)

    async def metadata(self) -> MetadataModelResponse:
        """MLServer's metadata, with the input and outputs described when model-settings.json does not."""
        meta = await super().metadata()
        service = self._service
        if not meta.inputs:
            shape = [-1, *(service.sample_shape or [-1] * service.layout.ndim)]
            meta.inputs = [MetadataTensor(name=service.config.input_name or "input-0", datatype="FP32", shape=shape)]
        if not meta.outputs:
            meta.outputs = [MetadataTensor(name=n, datatype=d, shape=s) for n, d, s in _OUTPUTS]
        return meta

    async def unload(self) -> bool:
        self._service.close()
        return True
