"""Debian's Chromium, headless, driven by Selenium through Debian's chromium-driver: the browser a vendor uses,
for tests that open the vendor page and fill in its forms."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextmanager
def chromium(*, width: int = 1280, height: int = 900, profile: Path | None = None) -> Iterator[webdriver.Chrome]:
    """A headless Chromium window of ``width`` × ``height`` CSS pixels; quit afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", f"--window-size={width},{height}", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    if profile is not None:
        options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


def overflowing(driver: webdriver.Chrome) -> list[str]:
    """Elements that reach past the window's right edge (a page a phone would have to scroll sideways)."""
    found: list[str] = driver.execute_script("""
        const width = window.innerWidth;
        const out = [];
        if (document.documentElement.scrollWidth > width) out.push('document ' + document.documentElement.scrollWidth);
        for (const el of document.querySelectorAll('body *')) {
            const box = el.getBoundingClientRect();
            if (box.width && box.right > width + 1) out.push(el.tagName + '.' + el.className + ' ' + box.right);
        }
        return out;""")
    return found
