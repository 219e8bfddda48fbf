"""A batch of wake-ups goes to Redis in one push, as messages a Celery worker takes like ``send_task``'s own."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from dunlink.usecases.ports import PLATFORM_QUEUE
from tests.support.stack import redis_base
from workers.celery_app import get_app
from workers.wakeups import RedisWakeUps

IDS_DIFFER = {"id", "root_id", "correlation_id", "delivery_tag", "argsrepr"}


def _flushed(index: int) -> Iterator[str]:
    url = f"{redis_base()}/{index}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def broker() -> Iterator[str]:
    yield from _flushed(15)


@pytest.fixture
def reference_broker() -> Iterator[str]:
    yield from _flushed(14)


def _queued(url: str, queue: str) -> list[dict[str, Any]]:
    with redis.Redis.from_url(url) as client:
        return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]  # oldest first


def _shape(value: Any) -> Any:
    """The message with what differs from one message to the next left out."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items() if key not in IDS_DIFFER}
    return value


def test_the_batch_is_one_push_of_messages_shaped_like_send_tasks(broker: str, reference_broker: str) -> None:
    wakeups = RedisWakeUps(broker)
    try:
        wakeups("dunlink.process_event", [[11], [12], [13]], PLATFORM_QUEUE)
    finally:
        wakeups.close()
    app = get_app()
    with app.connection_for_write(reference_broker) as connection, app.producer_or_acquire() as _:
        app.send_task("dunlink.process_event", args=[11], queue=PLATFORM_QUEUE, connection=connection)

    ours = _queued(broker, PLATFORM_QUEUE)
    [reference] = _queued(reference_broker, PLATFORM_QUEUE)
    assert [json.loads(base64.b64decode(m["body"]))[0] for m in ours] == [[11], [12], [13]]  # in the order given
    assert len({m["headers"]["id"] for m in ours}) == 3
    for message in ours:
        assert message["headers"]["id"] == message["headers"]["root_id"] == message["properties"]["correlation_id"]
        assert message["properties"]["delivery_tag"] == message["headers"]["id"]  # unique, as a tag must be
    # Everything else as Celery sends it, except the routing: straight to the queue's list.
    expected = _shape(reference)
    expected["properties"]["delivery_info"] = {"exchange": "", "routing_key": PLATFORM_QUEUE}
    assert _shape(ours[0]) == expected
    assert json.loads(base64.b64decode(ours[0]["body"])) == [[11], {}, json.loads(
        base64.b64decode(reference["body"]))[2]]
    assert ours[0]["headers"]["argsrepr"] == "[11]"


def test_a_kombu_consumer_reads_them_as_celery_task_messages(broker: str) -> None:
    wakeups = RedisWakeUps(broker)
    try:
        wakeups("dunlink.process_event", [[21], [22]], PLATFORM_QUEUE)
    finally:
        wakeups.close()
    queue = get_app().amqp.queues[PLATFORM_QUEUE]
    received: list[tuple[str, Any]] = []
    with Connection(broker) as connection, connection.Consumer(queue, accept=["json"]) as consumer:
        consumer.register_callback(lambda body, message: (received.append((message.headers["task"], body)),
                                                          message.ack()))
        while len(received) < 2:
            connection.drain_events(timeout=5)
    assert [(task, body[0]) for task, body in received] == [("dunlink.process_event", [21]),
                                                           ("dunlink.process_event", [22])]
