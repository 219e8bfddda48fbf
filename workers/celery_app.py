"""The Celery app, configured for payments: JSON only, late acks, one message at a time per process.

Redis carries wake-ups only; the database says what is to be done. Queues keep platform calls and email
apart so a slow mail server never holds up orders.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu.entity import Exchange, Queue

from dunlink.config.settings import settings
from dunlink.usecases.ports import EMAIL_QUEUE, PLATFORM_QUEUE, Work

RELAY_INTERVAL_SECONDS = 2.0
# Longer than any retry delay and any task: Redis redelivers an unacked message after this (kombu #337).
VISIBILITY_TIMEOUT_SECONDS = 2 * 3600


def transport_options(broker_url: str) -> dict[str, Any]:
    """Broker options; ``filesystem:///folder`` is the embedded broker the demo runs on (no Redis needed)."""
    if broker_url.startswith("filesystem://"):
        folder = Path(urlsplit(broker_url).path or "var/broker")
        for part in ("queue", "control", "processed"):
            (folder / part).mkdir(parents=True, exist_ok=True)
        return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                "control_folder": str(folder / "control"), "processed_folder": str(folder / "processed"),
                "store_processed": False, "polling_interval": 0.1}
    return {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS, "socket_timeout": 5, "socket_connect_timeout": 3}


@lru_cache(maxsize=1)
def get_app() -> Celery:
    config = settings()
    app = Celery("dunlink", broker=config.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=300,
        task_soft_time_limit=240,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        broker_transport_options=transport_options(config.broker_url),
        task_default_queue=PLATFORM_QUEUE,
        # Each queue on its own direct exchange and routing key, so a message reaches exactly one queue.
        task_queues=tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
                          for name in (PLATFORM_QUEUE, EMAIL_QUEUE)),
        task_create_missing_queues=False,
        worker_send_task_events=False,  # Flower switches events on while it watches (it does so periodically)
        task_send_sent_event=False,  # Flower follows tasks from the workers' events; publishers stay cheap
        timezone="UTC",
        beat_schedule={
            "relay": {"task": Work.RELAY.value, "schedule": RELAY_INTERVAL_SECONDS,
                      "options": {"queue": PLATFORM_QUEUE, "expires": 30}},
        },
    )
    return app


def send(task: str, args: list[Any], queue: str) -> None:
    """Publish a wake-up; a failed publish is not an error: the relay finds the stored work again."""
    get_app().send_task(task, args=args, queue=queue, retry=True,
                        retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2,
                                      "interval_max": 0.5})
