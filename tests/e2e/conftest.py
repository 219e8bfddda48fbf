from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import Stack, running_stack


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    """dunlink's processes on a real Redis and a fresh database, on SQLite and on PostgreSQL."""
    with running_stack(tmp_path, database_url) as running:
        yield running
