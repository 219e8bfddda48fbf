"""Reproducible faults on the sandbox's ``/v1`` calls, so retry behaviour can be tested and rehearsed."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Fault = Literal["timeout", "error", "rate_limit"]

_RATES = ("error_rate", "timeout_rate", "rate_limit_rate")
HOLD_S = 30.0  # a "timeout" fault holds the request this long, far beyond any client's read timeout


class FaultsError(ValueError):
    """A ``PUT /sandbox/faults`` body that can't be used; the message names the key."""


@dataclass(slots=True)
class Faults:
    """What ``PUT /sandbox/faults`` set. One draw per call picks at most one fault, so the rates are
    shares of calls: 0.5 errors and 0.1 timeouts leave 40% of calls untouched."""

    error_rate: float = 0.0
    error_status: int = 503
    timeout_rate: float = 0.0
    latency_ms: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_s: float = 1.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.error_rate or self.timeout_rate or self.rate_limit_rate)

    def draw(self) -> Fault | None:
        if not (self.error_rate or self.timeout_rate or self.rate_limit_rate):
            return None
        roll = self.rng.random()
        if roll < self.timeout_rate:
            return "timeout"
        if roll < self.timeout_rate + self.error_rate:
            return "error"
        if roll < self.timeout_rate + self.error_rate + self.rate_limit_rate:
            return "rate_limit"
        return None

    def to_json(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "error_status": self.error_status,
                "timeout_rate": self.timeout_rate, "latency_ms": self.latency_ms,
                "rate_limit_rate": self.rate_limit_rate, "retry_after_s": self.retry_after_s,
                "seed": self.seed}


def parse_faults(body: Any) -> Faults:
    """Check a faults body; every key is optional, unknown keys are refused so typos don't go unnoticed."""
    if not isinstance(body, Mapping):
        raise FaultsError("body: must be a JSON object")
    known = set(Faults.__dataclass_fields__) - {"rng"}
    for key in body:
        if key not in known:
            raise FaultsError(f"{key}: unknown key (expected one of {', '.join(sorted(known))})")

    def number(key: str, default: float) -> float:
        value = body.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise FaultsError(f"{key}: must be a number of 0 or more")
        return float(value)

    rates = {key: number(key, 0.0) for key in _RATES}
    for key, rate in rates.items():
        if rate > 1:
            raise FaultsError(f"{key}: must be between 0 and 1")
    if sum(rates.values()) > 1:
        raise FaultsError("error_rate + timeout_rate + rate_limit_rate must not exceed 1")
    status = body.get("error_status", 503)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise FaultsError("error_status: must be an HTTP error status (400-599)")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise FaultsError("seed: must be an integer")
    return Faults(error_rate=rates["error_rate"], error_status=status, timeout_rate=rates["timeout_rate"],
                  latency_ms=number("latency_ms", 0.0), rate_limit_rate=rates["rate_limit_rate"],
                  retry_after_s=number("retry_after_s", 1.0), seed=seed, rng=random.Random(seed))
