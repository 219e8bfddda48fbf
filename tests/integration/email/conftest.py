from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.smtp import Certificate, self_signed_certificate


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def mail_folder(tmp_path: Path) -> Path:
    return tmp_path / "mail"
