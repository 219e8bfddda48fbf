"""Everything that can go wrong talking to the platform, classified once, here at the boundary.

The pipeline never looks at HTTP status codes: it asks only "try again later?" (transient) or "a person has
to look" (permanent), plus the one permanent answer it acts on itself, a completed order.

    PlatformError
    ├── TransientPlatformError        retried in place briefly, then by the pipeline's own retry
    │   ├── PlatformTimeout           connect/read/write timeout: the effect may or may not have happened,
    │   │                             so the same Idempotency-Key must be used again
    │   ├── PlatformUnavailable       connection refused or reset, 5xx (``status`` is None or the code)
    │   └── RateLimited               429 (``retry_after`` seconds, as the platform asked)
    └── PermanentPlatformError        never retried blindly: recorded on the case for a person
        ├── Unauthorized              401/403: the token is wrong or revoked
        ├── OrderNotFound             404: no such order
        ├── Rejected                  422 and other 4xx (``status``, ``code``, ``message`` from the body),
        │                             e.g. an Idempotency-Key reused with another body
        ├── MalformedResponse         an answer that is not the JSON shape of the contract
        └── OrderCompleted            409 on cancel: the buyer paid everything, there is nothing to cancel
"""

from __future__ import annotations


class PlatformError(Exception):
    """Any failure of a platform call; see the module docstring for the tree."""


class TransientPlatformError(PlatformError):
    """Trying the same call again later (with the same idempotency key) may succeed."""


class PlatformTimeout(TransientPlatformError):
    """No answer in time; the effect may have happened, so retry with the same key."""


class PlatformUnavailable(TransientPlatformError):
    """The platform could not be reached or answered 5xx."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(TransientPlatformError):
    """429: the platform asked us to wait ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentPlatformError(PlatformError):
    """Repeating the call will not help; a person or a different decision is needed."""


class Unauthorized(PermanentPlatformError):
    """The bearer token was refused."""


class OrderNotFound(PermanentPlatformError):
    """The platform knows no order with this id."""


class Rejected(PermanentPlatformError):
    """The platform refused the request itself (422 or another 4xx)."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class MalformedResponse(PermanentPlatformError):
    """The answer does not have the shape the contract promises."""


class OrderCompleted(PermanentPlatformError):
    """Cancel refused because the order is completed: everything was paid."""
