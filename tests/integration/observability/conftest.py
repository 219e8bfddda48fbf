"""What the api logs while it is scraped, as an operator reads it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
import structlog

from dunlink.config.logs import configure_logging


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, object]]]]:
    """The log lines written so far, as production writes them (JSON); logging restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(json_output=True, stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()
