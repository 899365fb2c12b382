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


# Every text node's element whose text is rendered: its colour against its effective background.
CONTRAST_JS = """(minimum) => {
  const parse = (c) => { const m = c.match(/[\\d.]+/g) || []; return m.map(Number).concat([1]).slice(0, 4); };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    return layers.reverse().reduce((below, c) => over(c, below), [255, 255, 255, 1]);
  };
  const seen = new Set(), bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    const shown = el.checkVisibility({opacityProperty: true, visibilityProperty: true});
    if (!shown || el.closest(":disabled, .visually-hidden")) continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color), bg = background(el);
    const [a, b] = [lum(over(fg, bg)), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const what = `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}`;
    if (ratio < minimum) bad.push(`${what} "${n.textContent.trim().slice(0, 40)}" ${ratio.toFixed(2)}:1`);
  }
  return bad;
}"""


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

    def resize(self, viewport: dict) -> None:
        """Sets the viewport and waits for the page to follow it: two frames, so the first frame's
        layout and its ResizeObserver callbacks (the charts' new width) have run."""
        self.page.set_viewport_size(viewport)
        self.page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")

    def no_sideways_scroll(self, what: str = "the page") -> None:
        """Nothing sticks out past the viewport's width (a phone would scroll sideways)."""
        width = self.page.evaluate("document.documentElement.scrollWidth")
        limit = self.page.viewport_size["width"]
        assert width <= limit, f"{what} scrolls sideways: {width} px wide in a {limit} px viewport"

    def low_contrast(self, minimum: float = 4.5) -> list[str]:
        """Visible text whose colour has less than `minimum`:1 contrast (WCAG 2 relative luminance) with
        the background it is drawn on: the nearest ancestor's opaque background colour, blended over what is
        behind it. Disabled controls are exempt, as WCAG exempts inactive components."""
        return self.page.evaluate(CONTRAST_JS, minimum)

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
