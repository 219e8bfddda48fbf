"""Every Celery task in one table: its name (the use cases' :class:`~dunlink.usecases.ports.Work`), its queue,
and how a busy case is retried; and the services of a worker process, built once per process after fork.

Task modules register from this table, the api and the CLI publish through :func:`send`, so a name or a queue
is written in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dunlink.config.settings import Settings, settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.ports import EMAIL_QUEUE, PLATFORM_QUEUE, Work
from workers.celery_app import send
from workers.wakeups import for_broker

QUEUES = (PLATFORM_QUEUE, EMAIL_QUEUE)
# A case that another worker holds mid-step is tried again after this, up to MAX_BUSY_RETRIES times (the relay
# is the backstop after that).
BUSY_RETRY_SECONDS = 1.0
MAX_BUSY_RETRIES = 20
# The email task's former name: wake-ups queued before an upgrade still find a worker.
FORMER_SEND_LINK = "dunlink.send_link"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    queue: str


TASKS = {work: TaskSpec(work.value, work.queue) for work in Work}


def celery_services(config: Settings | None = None) -> Services:
    """Services whose wake-ups go to Celery through the broker of the settings (batched as the webhook's)."""
    config = config or settings()
    return build_services(config, enqueue=send, enqueue_many=for_broker(config.broker_url))


_services: tuple[int, Services] | None = None


def services() -> Services:
    """This worker process's services, built on first use after fork (each worker child gets its own pools)."""
    global _services
    if _services is None or _services[0] != os.getpid():
        _services = (os.getpid(), celery_services())
    return _services[1]
