"""The lab page in a real browser (Debian's Chromium through Playwright), shared by the lab tests:
one browser context with every console error, page error and request it produced, sign-in through
the page, and screenshots saved where a person can look at them after a run (build/screenshots/)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mllab_dev.stack import ROOT, Stack

WAIT_MS = 30_000  # an action crosses the gateway, a function and the emulators: slow on two loaded cores
SCREENSHOTS = Path(os.environ.get("MLLAB_SCREENSHOTS", ROOT / "build" / "screenshots"))
PHONE = {"width": 390, "height": 844}  # an iPhone 12-14 sized viewport


class Lab:
    """One browser context on the lab page.

    `allowed` lists the error answers a test expects on the lab's origin as (status, path suffix):
    Chromium logs every 4xx/5xx answer as a console error, so anything else fails the test. The page's
    System status section asks /healthz, which answers 503 when one of the stack's health probes
    (2 s deadline) times out on a loaded machine: that is the status widget reporting the machine, not
    a lab error, so it is always allowed (and noted in `tolerated`)."""

    def __init__(
        self,
        chromium,
        stack: Stack,
        *,
        allowed: list[tuple[int, str]] | None = None,
        viewport: dict | None = None,
        **context,
    ) -> None:
        self.stack = stack
        context.setdefault("locale", "en-US")
        context.setdefault("timezone_id", "UTC")
        self.context = chromium.new_context(viewport=viewport or {"width": 1000, "height": 900}, **context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.tolerated: list[str] = []
        self.requests: list[str] = []
        self.allowed = list(allowed or [])
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def _console(self, msg) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        text = f"console: {msg.text} ({url})"
        if not url.startswith(self.stack.gateway_url) and url.startswith(getattr(self.stack, "paypal_url", "\0")):
            return  # the PayPal stand-in's own page (its missing favicon), not the lab's
        if url == f"{self.stack.gateway_url}/healthz" and "status of 503" in msg.text:
            self.tolerated.append(text)
            return
        if any(f"status of {status}" in msg.text and url.split("?")[0].endswith(path) for status, path in self.allowed):
            self.tolerated.append(text)
            return
        self.errors.append(text)

    def open(self, query: str = "", **kw) -> None:
        self.page.goto(f"{self.stack.gateway_url}/{query}", **kw)
        self.page.wait_for_selector("#account > :not([hidden])")

    def sign_in(self, user: dict, query: str = "") -> None:
        """Signs in through the page's email + password form."""
        self.open(query)
        self.page.wait_for_selector("#signed-out:not([hidden])")
        self.page.fill("#email", user["email"])
        self.page.fill("#password", user["password"])
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_selector("#signed-in:not([hidden])")
        self.uid = user.get("uid")

    def no_sideways_scroll(self, what: str = "the page") -> None:
        """Nothing sticks out past the viewport's width (a phone would scroll sideways)."""
        width = self.page.evaluate("document.documentElement.scrollWidth")
        limit = self.page.viewport_size["width"]
        assert width <= limit, f"{what} scrolls sideways: {width} px wide in a {limit} px viewport"

    def screenshot(self, name: str, *, locator: str | None = None) -> Path:
        """Saves build/screenshots/<name>.png (the whole page, or one element)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        if locator:
            self.page.locator(locator).screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=True)
        return path

    def check_clean(self) -> None:
        if self.tolerated:
            print("\ntolerated: " + "; ".join(self.tolerated))
        assert not self.errors, "\n".join(self.errors)

    def close(self) -> None:
        self.context.close()


@contextmanager
def checked(lab: Lab) -> Iterator[Lab]:
    """Yields `lab`; afterwards closes it and fails on any console or page error it recorded."""
    try:
        yield lab
    finally:
        lab.close()
    lab.check_clean()


def fixture(cls: type[Lab], *, opened: bool = False):
    """A `lab` fixture for a test module: a cls(chromium, stack) (its page opened first when
    `opened`), closed and checked clean after the test."""

    @pytest.fixture
    def lab(chromium, stack: Stack) -> Iterator[Lab]:
        with checked(cls(chromium, stack)) as made:
            if opened:
                made.open()
            yield made

    return lab
