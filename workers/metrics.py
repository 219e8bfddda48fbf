"""Prometheus metrics (prometheus-client): counters in the process, case figures read from the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from workers.bootstrap import Services

REGISTRY = CollectorRegistry(auto_describe=True)
WEBHOOKS = Counter("dunlink_webhooks", "Webhooks received, by vendor, event and HTTP answer",
                   ["vendor", "event", "answer"], registry=REGISTRY)


class _CaseCollector(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        states = GaugeMetricFamily("dunlink_cases", "Dunning cases by state", labels=["state"])
        with self.services.uow() as uow:
            counts = uow.cases.count_by_state()
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield states


def render_metrics(services: Services) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(_CaseCollector(services))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
