"""The workbench page for the lab tests that train (workbench, cloud, library, accessibility): the CPU
backend unless a test asks for another, the XOR demo, the builder, training (in a worker) and predictions."""

from __future__ import annotations

import json
import re

from mllab_dev.stack import Stack

from . import lab_support

TRAIN_TIMEOUT_MS = 60_000  # 300 XOR epochs take ~1.5 s on cpu; allow for a loaded machine
DONE = "#train-panel:is([data-state=done],[data-state=stopped],[data-state=early-stopped],[data-state=error])"


class Lab(lab_support.Lab):
    """The lab page with the workbench: the CPU backend unless a test asks for another."""

    def __init__(self, chromium, stack: Stack, **kw) -> None:
        super().__init__(chromium, stack, accept_downloads=True, **kw)

    def open(self, query: str = "?backend=cpu", **kw) -> None:
        super().open(query, **kw)
        self.page.wait_for_selector("#train-button")

    def sign_in(self, user: dict, query: str = "?backend=cpu") -> None:
        super().sign_in(user, query)

    def tf_loaded(self) -> bool:
        """TF.js has been loaded: in the training worker (the page itself never loads it)."""
        return self.page.evaluate(
            "async () => typeof window.tf !== 'undefined' || (await import('/js/trainer.js')).isLoaded()"
        )

    def vendor_requests(self) -> list[str]:
        return [u for u in self.requests if "/vendor/" in u]

    def load_xor(self) -> None:
        from playwright.sync_api import expect

        self.page.locator("#data-panel").get_by_role("button", name="Load the XOR demo").click()
        expect(self.page.locator("#param-count")).not_to_contain_text("assuming")

    def configure(
        self,
        *,
        units: int = 8,
        activation: str = "tanh",
        optimizer: str = "adam",
        lr: float = 0.1,
        epochs: int = 300,
        batch: int = 4,
        seed: int = 1,
        patience: int = 0,
    ) -> None:
        p = self.page
        p.get_by_label("Layer 1 units", exact=True).fill(str(units))
        p.get_by_label("Layer 1 activation", exact=True).select_option(activation)
        p.select_option("#b-optimizer", optimizer)
        for sel, value in (
            ("#b-lr", lr),
            ("#b-epochs", epochs),
            ("#b-batch", batch),
            ("#b-seed", seed),
            ("#b-patience", patience),
        ):
            p.fill(sel, str(value))

    def train(self, timeout: int = TRAIN_TIMEOUT_MS) -> dict[str, str]:
        self.page.get_by_role("button", name="Train", exact=True).click()
        self.page.wait_for_selector(DONE, timeout=timeout)
        return self.panel_data()

    def panel_data(self) -> dict[str, str]:
        return self.page.locator("#train-panel").evaluate("e => ({...e.dataset})")

    def predict(self, x1: float, x2: float) -> tuple[str, list[float]]:
        from playwright.sync_api import expect

        out = self.page.locator("#prediction")
        out.evaluate("e => { delete e.dataset.output; delete e.dataset.label; }")
        self.page.get_by_label("x1", exact=True).fill(str(x1))
        self.page.get_by_label("x2", exact=True).fill(str(x2))
        self.page.locator("#predict-form").get_by_role("button", name="Predict").click()
        expect(out).to_have_attribute("data-output", re.compile(r"^\["))
        return out.get_attribute("data-label"), json.loads(out.get_attribute("data-output"))

    def num_tensors(self) -> int:
        """Tensors alive in the training worker."""
        return self.page.evaluate("async () => (await (await import('/js/trainer.js')).memory()).numTensors")


lab = lab_support.fixture(Lab)
