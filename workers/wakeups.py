"""Publishing many wake-ups at once, for the webhook's group commit: one broker round trip per batch.

Celery's ``send_task`` costs about 0.4 ms of CPU per message on the Redis transport (routing, a Redis
client built per publish, a binding lookup per message). A batch of wake-ups needs none of that: the
task message itself is still made by Celery (``amqp.create_task_message``, protocol 2), and kombu's Redis
envelope around it is written here, so every message of a batch goes to Redis in one ``LPUSH`` to the
queue's list, where a worker's kombu consumer takes it like any other (anonymous exchange, routing key =
queue name: no binding lookup, and a restored unacked message goes back to the same list).

Other brokers (the demo's filesystem transport) are published to one message at a time through Celery.
A failed publish raises; the caller leaves the work to the relay, as with a single ``send``.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio

from dunlink.runtime.bootstrap import EnqueueMany
from workers.celery_app import get_app, send, transport_options

# Stand-ins for what differs between two messages of the same task and queue, replaced in the rendered text.
_TASK_ID, _ARGSREPR, _BODY, _TAG = "@@task-id@@", "@@argsrepr@@", "@@body@@", "@@delivery-tag@@"
_MARKERS = re.compile("(" + "|".join(re.escape(m) for m in (_TASK_ID, _ARGSREPR, _BODY, _TAG)) + ")")


class RedisWakeUps:
    """``enqueue_many`` for a Redis broker: the messages of a call go to Redis in one ``LPUSH``."""

    def __init__(self, broker_url: str) -> None:

        options = transport_options(broker_url)
        self._url = broker_url
        self._async_client: Any = None
        self._client = redis.Redis.from_url(broker_url, socket_timeout=options["socket_timeout"],
                                            socket_connect_timeout=options["socket_connect_timeout"])
        self._templates: dict[tuple[str, str], tuple[list[str], str]] = {}

    def _template(self, task: str, queue: str) -> tuple[list[str], str]:
        """The message as Celery makes it (headers, properties, body's embed), rendered once with stand-ins.

        The envelope is kombu's for its virtual transports (``Channel.prepare_message`` and
        ``basic_publish``): body base64-encoded, a delivery tag of its own, where it was routed.
        """
        app = get_app()
        # As send_task fills them: no result wanted unless the task says so, replies (if any) to this thread.
        made = app.amqp.create_task_message(_TASK_ID, task, [], {}, reply_to=app.thread_oid, ignore_result=None,
                                            argsrepr=_ARGSREPR, kwargsrepr="{}")
        _args, kwargs, embed = made.body
        properties = {**made.properties, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
                      "priority": 0, "body_encoding": "base64", "delivery_tag": _TAG}
        envelope = {"body": _BODY, "content-encoding": "utf-8", "content-type": "application/json",
                    "headers": made.headers, "properties": properties}
        body_tail = ", " + json.dumps(kwargs) + ", " + json.dumps(embed) + "]"
        return _MARKERS.split(json.dumps(envelope)), body_tail

    def message(self, task: str, args: list[Any], queue: str) -> str:
        """One Celery task message in kombu's Redis envelope, as ``send_task(..., queue=queue)`` would queue it."""
        template = self._templates.get((task, queue))
        if template is None:
            template = self._templates[(task, queue)] = self._template(task, queue)
        pieces, body_tail = template
        body = base64.b64encode(("[" + json.dumps(args) + body_tail).encode("utf-8")).decode("ascii")
        task_id = str(uuid.uuid4())
        # The delivery tag only has to be unique among unacknowledged messages: the task id is.
        values = {_TASK_ID: task_id, _ARGSREPR: json.dumps(repr(args))[1:-1], _BODY: body, _TAG: task_id}
        return "".join([values.get(piece, piece) for piece in pieces])

    def __call__(self, task: str, args_list: Sequence[list[Any]], queue: str) -> None:
        if not args_list:
            return
        messages = [self.message(task, args, queue) for args in args_list]
        # LPUSH puts each value at the head in turn and workers take from the tail: first given, first out.
        self._client.lpush(queue, *messages)

    async def push(self, task: str, args_list: Sequence[list[Any]], queue: str) -> None:
        """The same ``LPUSH`` from an event loop (one asyncio client, made on first use on that loop)."""
        if not args_list:
            return

        if self._async_client is None:
            options = transport_options(self._url)
            self._async_client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=options["socket_timeout"],
                socket_connect_timeout=options["socket_connect_timeout"])
        messages = [self.message(task, args, queue) for args in args_list]
        await self._async_client.lpush(queue, *messages)

    async def aclose(self) -> None:
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            await client.aclose()

    def close(self) -> None:
        self._client.close()


def one_by_one(enqueue: Callable[[str, list[Any], str], None]) -> EnqueueMany:
    """``enqueue_many`` from a single-message ``enqueue``: stops at the first failure (the relay has the rest)."""
    def enqueue_many(task: str, args_list: Sequence[list[Any]], queue: str) -> None:
        for args in args_list:
            enqueue(task, args, queue)

    return enqueue_many


def for_broker(broker_url: str) -> EnqueueMany:
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisWakeUps(broker_url)
    return one_by_one(send)
