"""Celery alone: the app (``celery_app.py``), the tasks, signal hooks, the Redis wake-up publisher, and
``registry.py``, the one table of task names, queues and retries.

``celery -A workers worker`` finds the Celery app here as ``workers.app``; it is built lazily so that importing
this package touches no network and reads no settings.
"""

from __future__ import annotations

import sys
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        # Imported on first use: importing the package (as every submodule does) reads no settings.
        from dunlink.config.settings import SettingsError  # noqa: PLC0415
        from workers.celery_app import get_app  # noqa: PLC0415

        try:
            return get_app()
        except SettingsError as exc:  # ``celery -A workers``: one line, as ``dunlink`` says it, not a traceback
            print(f"dunlink: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    raise AttributeError(name)
