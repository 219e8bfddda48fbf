"""Process entry points and wiring: settings, the Celery app, tasks, the webhook app, the sandbox, the CLI.

``celery -A workers worker`` finds the Celery app here as ``workers.app``; it is built lazily so that importing
this package touches no network and reads no settings.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from workers.celery_app import get_app

        return get_app()
    raise AttributeError(name)
