"""The adapter's error root: each subclass maps to one answer of the failure contract (see app.py)."""

from __future__ import annotations

from common.errors import VisualSearchError


class AdapterError(VisualSearchError):
    """A request the adapter could not serve; the subclass decides the status and whether it is retryable."""
