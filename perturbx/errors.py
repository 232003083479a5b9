"""Exceptions shared by every layer (adapters, engine, methods), so no layer imports one above it."""

from __future__ import annotations


class QueryBudgetError(RuntimeError):
    """Raised when an explanation would need more model queries than ``max_queries`` allows."""
