"""The mistakes a request (or a run handed to the service) can make, and the HTTP status of each.

All are ``UserError``s, so the one-shot CLI (jobs/recommend.py) exits 2 on them, as on any
mistake a user can fix; the service answers them as JSON ``{"detail": message}``.
"""

from __future__ import annotations

from distrec.errors import UserError

__all__ = ["UnknownId", "BadRequest", "NotServable", "http_status"]


class UnknownId(UserError):
    """A user or item id the run's data does not have (HTTP 404)."""


class BadRequest(UserError):
    """A malformed request: ``k`` out of range, duplicate or non-finite inputs (HTTP 422)."""


class NotServable(UserError):
    """What the run cannot serve, with the reason: a whole run at start, or one feature (fold-in
    for a model without one, an HNSW index for a model that is no inner product; HTTP 501)."""


def http_status(error: UserError) -> int:
    for cls, status in ((UnknownId, 404), (BadRequest, 422), (NotServable, 501)):
        if isinstance(error, cls):
            return status
    return 400
