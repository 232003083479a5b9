"""The errors of the explanation service, each with the HTTP status it is answered with."""

from __future__ import annotations

from collections.abc import Iterable


class ServingError(Exception):
    """A request the service answers with an error: ``status`` (HTTP) and a message that names the problem.

    Parameters
    ----------
    message : str
        What went wrong and how to fix it; never holds a secret (see :func:`redact`).
    status : int
        400 malformed request, 413 too many samples, 422 over the query budget, 502 the
        predictor failed, 503 too many requests waiting, 504 past the deadline, 500 anything else.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status)


class DeadlineError(ServingError):
    """The request's deadline passed before its explanation was done (HTTP 504)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 504)


class ConfigError(ValueError):
    """The explainer's configuration (``parameters.extra`` of model-settings.json) is invalid."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (of at least 4 characters) replaced by ``***``, longest first."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
