"""The vendor page in a real browser (Debian's chromium, headless, driven by chromedriver) on a phone and a desktop.

A tiny Starlette app serves the rendered page and its two static files on 127.0.0.1 with the page's
Content-Security-Policy, so the browser itself proves that the page needs nothing the policy forbids: no
violation may reach the console. Then what a vendor does: read it without scrolling sideways, copy a value,
paste the link and send it. ``DUNLINK_SCREENSHOTS=1`` also writes the screenshots under docs/screenshots/.

The browser and its driver are system packages (``apt-get install -y chromium chromium-driver``), never
installed by the test.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from adapters.email.preview import sample_vendor_task
from adapters.email.render import EmailRenderer
from adapters.web.preview import PAGE_STATES, sample_page
from adapters.web.vendor_page import PAGE_HEADERS, VendorPage, VendorPageContext

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TOKEN = "ImNhc2UtMjA0MSI.aQ2kEA.7Hq2xvN3rU0pYd1mZ9sKq4LwT8cFj2Ws"
PHONE, DESKTOP = (375, 812), (1280, 900)
WAIT = 10  # seconds for the browser to show what a click changed

# Everything that sticks out past the right edge of the viewport, by more than a rounding pixel.
OVERFLOW_JS = """
const width = window.innerWidth;
const out = [];
for (const element of document.querySelectorAll("body *")) {
  const box = element.getBoundingClientRect();
  if (box.width > 0 && box.right > width + 1) {
    out.push(`${element.tagName.toLowerCase()}.${element.className} right=${Math.round(box.right)}`);
  }
}
return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, outside: out};
"""


@dataclass
class Site:
    """The page as a route would serve it, and every form the browser posted to it."""

    base: str
    context: VendorPageContext
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        return f"{self.base}/vendor/cases/{TOKEN}"

    def show(self, locale: str, state: str, **changes: Any) -> str:
        """Serve the sample case's page in ``state`` from now on; its URL."""
        task = replace(sample_vendor_task(locale), page_url=self.page_url)
        self.context = sample_page(locale, state, task=task, **changes)
        return self.page_url


def _app(site: Site, page: VendorPage) -> Starlette:
    async def show_page(request: Request) -> Response:
        if request.path_params["token"] != TOKEN:
            return Response(status_code=404)
        return HTMLResponse(page.render(site.context), headers=PAGE_HEADERS)

    async def static(request: Request) -> Response:
        try:
            body, kind = page.asset(request.path_params["name"])
        except KeyError:
            return Response(status_code=404)
        return Response(body, media_type=kind, headers={"X-Content-Type-Options": "nosniff"})

    async def post(request: Request) -> Response:
        # Read as dunlink's routes read it: a urlencoded body, parsed by the standard library.
        form = parse_qs((await request.body()).decode("utf-8"), keep_blank_values=True)
        site.posts.append((request.path_params["action"], {key: values[0] for key, values in form.items()}))
        return RedirectResponse(f"/vendor/cases/{request.path_params['token']}", status_code=303)

    return Starlette(routes=[
        Route("/vendor/cases/{token}", show_page),
        Route("/vendor/static/{name}", static),
        Route("/vendor/cases/{token}/{action}", post, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    served = Site(base=base, context=sample_page("en", "link"))
    server = uvicorn.Server(uvicorn.Config(_app(served, VendorPage()), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "the page's server did not start"
        time.sleep(0.05)
    yield served
    server.should_exit = True
    thread.join(timeout=10)
    listener.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            pytest.fail(f"{program} is missing: install Debian's browser first "
                        "(apt-get update && apt-get install -y chromium chromium-driver)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--hide-scrollbars", "--lang=en"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: WebDriver, width: int, height: int) -> None:
    """The size of the page's viewport exactly, as a phone (touch, meta viewport honoured) or a desktop."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": width < 600})


def open_page(driver: WebDriver, url: str, size: tuple[int, int]) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    viewport(driver, *size)
    driver.get(url)
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.readyState") == "complete")


def console_problems(driver: WebDriver) -> list[str]:
    """What the console says went wrong: policy violations, failed loads, script errors. The browser's own request
    for /favicon.ico is the api's business, not the page's: the page asks for no icon."""
    return [entry["message"] for entry in driver.get_log("browser")
            if (entry["level"] in ("SEVERE", "WARNING") or "Content Security Policy" in entry["message"])
            and "/favicon.ico " not in entry["message"]]


def assert_nothing_overflows(driver: WebDriver) -> None:
    layout = driver.execute_script(OVERFLOW_JS)
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    assert layout["outside"] == [], layout


def screenshot(driver: WebDriver, name: str, width: int) -> None:
    """The whole page at ``width``, as tall as its content, when DUNLINK_SCREENSHOTS=1."""
    if os.environ.get("DUNLINK_SCREENSHOTS") != "1":
        return
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    viewport(driver, width, height)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / name))


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
@pytest.mark.parametrize("state", PAGE_STATES)
def test_every_state_fits_the_screen_and_runs_under_the_policy(browser: WebDriver, site: Site,
                                                               state: str, size: tuple[int, int]) -> None:
    open_page(browser, site.show("de", state), size)

    assert console_problems(browser) == []
    assert_nothing_overflows(browser)
    # The stylesheet and the script were allowed to run: the cards are styled and the copy buttons revealed.
    assert browser.find_element(By.CSS_SELECTOR, ".card:not(.status)").value_of_css_property("background-color") in (
        "rgba(255, 255, 255, 1)", "rgb(255, 255, 255)")
    assert all(button.is_displayed() for button in browser.find_elements(By.CSS_SELECTOR, "button.copy"))


@pytest.mark.parametrize(("size", "name"), [(PHONE, "vendor-page-375.png"), (DESKTOP, "vendor-page-1280.png")])
def test_long_values_wrap_instead_of_widening_the_page(browser: WebDriver, site: Site, size: tuple[int, int],
                                                      name: str) -> None:
    """A refused link explained at the form, and the longest values a vendor meets: they wrap, nothing overflows."""
    url = site.show("en", "link", problem="host_not_allowed", problem_host="payments.example-checkout-provider.com",
                    allowed_hosts=("copecart.com",))
    site.context = replace(site.context, task=replace(
        site.context.task, buyer_email="emma.clarke.customer-service-department@example-company-domain.co.uk"))
    open_page(browser, url, size)

    assert console_problems(browser) == []
    assert_nothing_overflows(browser)
    problem = browser.find_element(By.ID, "payment_url-problem")
    assert "payments.example-checkout-provider.com" in problem.text and problem.is_displayed()
    for control in browser.find_elements(By.CSS_SELECTOR, "input, button"):
        assert control.size["height"] >= 44, control.get_attribute("outerHTML")
    screenshot(browser, name, size[0])


def test_a_copy_button_puts_the_value_on_the_clipboard_and_says_so(browser: WebDriver, site: Site) -> None:
    url = site.show("en", "link")
    open_page(browser, url, PHONE)
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": site.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})

    for target, expected in (("buyer-email", "emma.clarke@example.co.uk"), ("amount-1", "147.00")):
        button = browser.find_element(By.CSS_SELECTOR, f'button.copy[data-target="{target}"]')
        button.click()
        WebDriverWait(browser, WAIT).until(lambda _, b=button: b.text == "Copied")  # type: ignore[misc]
        assert "copied" in (button.get_attribute("class") or "").split()
        pasted = browser.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('refused: ' + e));")
        assert pasted == expected
    assert browser.find_element(By.ID, "copy-status").get_attribute("textContent") == "Copied"
    assert console_problems(browser) == []


def test_the_link_form_posts_what_the_vendor_typed(browser: WebDriver, site: Site) -> None:
    url = site.show("en", "link")
    open_page(browser, url, PHONE)
    site.posts.clear()

    browser.find_element(By.ID, "payment_url").send_keys("https://www.copecart.com/orders/9f3e7a21/checkout")
    browser.find_element(By.ID, "order_id").send_keys("CC-2041")
    browser.find_element(By.CSS_SELECTOR, "#link-form button[type=submit]").click()
    WebDriverWait(browser, WAIT).until(lambda _: site.posts)

    assert site.posts == [("link", {"payment_url": "https://www.copecart.com/orders/9f3e7a21/checkout",
                                    "order_id": "CC-2041"})]
    WebDriverWait(browser, WAIT).until(lambda d: d.current_url == url)  # the 303 led back to the page
    assert console_problems(browser) == []


def test_without_javascript_the_values_show_and_the_forms_still_post(browser: WebDriver, site: Site) -> None:
    url = site.show("en", "original_cancelled")
    site.posts.clear()
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        open_page(browser, url, PHONE)
        assert browser.find_element(By.ID, "buyer-email").text == "emma.clarke@example.co.uk"
        assert not any(button.is_displayed() for button in browser.find_elements(By.CSS_SELECTOR, "button.copy"))
        browser.find_element(By.XPATH, "//button[contains(., 'I cancelled the original order CC-1874')]").click()
        WebDriverWait(browser, WAIT).until(lambda _: site.posts)
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})

    assert site.posts == [("original-cancelled", {})]


@pytest.mark.parametrize("locale", ["en", "de"])
def test_the_task_email_reads_at_700_pixels(browser: WebDriver, tmp_path: Path, locale: str) -> None:
    page = tmp_path / f"vendor_task.{locale}.html"
    page.write_text(EmailRenderer().vendor_task(sample_vendor_task(locale)).html, encoding="utf-8")
    open_page(browser, page.as_uri(), (700, 900))

    assert console_problems(browser) == []
    assert_nothing_overflows(browser)
    if locale == "en":
        screenshot(browser, "vendor-task-email.png", 700)
