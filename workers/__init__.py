"""Process entry points and wiring: settings, the Celery app, tasks, the webhook app, the sandbox, the CLI.

``celery -A workers worker`` finds the Celery app here as ``workers.app``; it is built lazily so that importing
this package touches no network and reads no settings.
"""

from __future__ import annotations

import sys
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from dunlink.config.settings import SettingsError
        from workers.celery_app import get_app

        try:
            return get_app()
        except SettingsError as exc:  # ``celery -A workers``: one line, as ``dunlink`` says it, not a traceback
            print(f"dunlink: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    raise AttributeError(name)
