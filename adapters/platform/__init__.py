"""The checkout platform's order API: the port, its HTTP client and an in-memory stand-in."""

from adapters.platform.errors import (
    MalformedResponse,
    OrderCompleted,
    OrderNotFound,
    PermanentPlatformError,
    PlatformError,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    TransientPlatformError,
    Unauthorized,
)
from adapters.platform.port import Buyer, NewOrder, Order, Plan, PlanInstallment, PlatformPort

__all__ = [
    "Buyer", "MalformedResponse", "NewOrder", "Order", "OrderCompleted", "OrderNotFound",
    "PermanentPlatformError", "Plan", "PlanInstallment", "PlatformError", "PlatformPort", "PlatformTimeout",
    "PlatformUnavailable", "RateLimited", "Rejected", "TransientPlatformError", "Unauthorized",
]
