"""Renderer interface: masks in, perturbed batch out, on the model's backend."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from perturbx.backend import Array


@runtime_checkable
class Renderer(Protocol):
    """Turns keep-masks ``(n, H, W)`` or ``(n, C, H, W)`` into a model batch ``(n, *sample_shape)``.

    A renderer whose ``render`` also takes ``out=`` (an array ``(n, *sample_shape)`` of the batch's
    dtype on the backend, written and returned) and that has a ``sample_shape`` attribute is given
    reused memory by the engine (:class:`~perturbx.renderers.buffers.BufferPool`); one without
    gets none and returns a new batch each time.
    """

    def render(self, masks: Array) -> Array:
        """Perturbed inputs for ``masks`` (1 keeps the input, 0 takes the baseline)."""
