"""Renderers: build perturbed batches from masks where the model runs."""

from .base import Renderer
from .blend import BlendRenderer
from .buffers import BufferPool

__all__ = ["BlendRenderer", "BufferPool", "Renderer"]
