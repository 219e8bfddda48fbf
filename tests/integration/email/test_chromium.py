"""Every email's HTML opens in a real browser engine (Debian's chromium, headless) and draws a page.

This catches what string checks cannot: markup the engine rejects or a layout that collapses to nothing.
The browser is a system package, installed with the machine (``apt-get install -y chromium``), never by
the test itself.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from adapters.email.preview import sample
from adapters.email.render import EMAILS, LOCALES, EmailRenderer

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 800, 1400
TIMEOUT = 90  # seconds for one page: a cold start on a busy two-core machine takes a few


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium first "
                    "(apt-get update && apt-get install -y chromium)")
    return CHROMIUM


def screenshot(chromium: Path, page: Path, png: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", f"--screenshot={png}",
         f"--window-size={WIDTH},{HEIGHT}", page.as_uri()],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, stdin=subprocess.DEVNULL,
    )


def png_size(png: Path) -> tuple[int, int]:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", EMAILS)
def test_each_email_renders_in_headless_chromium(
        chromium: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, locale: str) -> None:
    page = tmp_path / f"{name}.{locale}.html"
    page.write_text(EmailRenderer().email(sample(name, locale)).html, encoding="utf-8")
    png = tmp_path / f"{name}.{locale}.png"
    profile = tmp_path / "profile"

    try:
        result = screenshot(chromium, page, png, profile)
    finally:
        shutil.rmtree(profile, ignore_errors=True)

    assert result.returncode == 0, result.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 0
    assert png_size(png) == (WIDTH, HEIGHT)
    # A page that drew nothing compresses to a few kilobytes; text, tables and bars take far more.
    assert png.stat().st_size > 20_000
    # The emails run no script and load nothing, so anything on the console is a problem.
    assert [line for line in result.stderr.splitlines() if ":CONSOLE" in line] == []
    if name == "vendor_summary":
        with capsys.disabled():
            print(f"\nvendor summary ({locale}) screenshot: {png}")
