"""Renderers: build perturbed batches from masks where the model runs."""

from .base import Renderer
from .blend import BlendRenderer

__all__ = ["BlendRenderer", "Renderer"]
