"""One renderer per test module: building it compiles every template and the German catalog."""

from __future__ import annotations

import pytest

from adapters.email.render import EmailRenderer


@pytest.fixture(scope="module")
def renderer() -> EmailRenderer:
    return EmailRenderer()
