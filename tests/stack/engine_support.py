"""The lab's training engine in a real browser, for the tests that check what it computes and how the
page behaves while it trains: CSV files to load, the metrics recomputed in Python from the predictions
the page exposes (state.model.validation), the page's long tasks, and waits that do not poll the page
(Playwright's polling runs on the page's main thread and would show up as its own long tasks)."""

from __future__ import annotations

import math
import random
from pathlib import Path

from . import lab_support, workbench_support


class Lab(workbench_support.Lab):
    """The workbench with helpers for the engine's tests."""

    def load_csv(self, path: Path) -> None:
        from playwright.sync_api import expect

        self.page.set_input_files("#data-file", path)
        expect(self.page.locator("#data-summary")).to_contain_text(path.name)

    def settings(self, **fields: object) -> None:
        """Fills builder fields by id suffix: settings(epochs=3, batch=64, lr=0.05, patience=0)."""
        for name, value in fields.items():
            self.page.fill(f"#b-{name}", str(value))

    def start_training(self) -> None:
        self.page.get_by_role("button", name="Train", exact=True).click()

    def wait_settled(self, timeout_ms: int = 300_000) -> dict[str, str]:
        """Waits for the run to end from inside the page (a MutationObserver, no polling)."""
        self.page.evaluate(
            """([timeout, settled]) => new Promise((resolve, reject) => {
                const panel = document.getElementById('train-panel');
                const done = () => panel.matches(settled);
                if (done()) return resolve();
                const watch = new MutationObserver(() => { if (done()) { watch.disconnect(); resolve(); } });
                watch.observe(panel, {attributes: true});
                setTimeout(() => reject(new Error('training did not end in time')), timeout);
            })""",
            [timeout_ms, workbench_support.DONE],
        )
        return self.panel_data()

    def watch_long_tasks(self) -> None:
        """From now on the page records every long task (>= 50 ms on its main thread)."""
        self.page.evaluate(
            """() => { window.__longTasks = [];
                const keep = (list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); };
                new PerformanceObserver(keep).observe({type: 'longtask'}); }"""
        )

    def long_tasks(self) -> list[float]:
        return self.page.evaluate("window.__longTasks")

    def model_state(self) -> dict:
        """What the workbench keeps of the trained model: metrics, heldOut and the validation predictions."""
        return self.page.evaluate(
            """async () => { const {state} = await import('/js/state.js'); const m = state.model;
                const validation = Object.fromEntries(Object.entries(m.validation).map(([k, v]) => [k, Array.from(v)]));
                return {metrics: m.metrics, validation, heldOut: m.heldOut}; }"""
        )


lab = lab_support.fixture(Lab)


# --- files -------------------------------------------------------------------------------------------


def house_prices(path: Path, rows: int = 400, seed: int = 5) -> Path:
    """A regression CSV: an id counter, the target `price` (not the last column), three features."""
    rng = random.Random(seed)
    lines = ["id,price,sqft,rooms,city"]
    for i in range(rows):
        sqft, rooms, city = rng.uniform(40, 250), rng.randint(1, 6), rng.choice(["north", "south"])
        price = 2000 * sqft + 15000 * rooms + (40000 if city == "north" else 0) + rng.gauss(0, 20000)
        lines.append(f"{i},{price:.0f},{sqft:.1f},{rooms},{city}")
    path.write_text("\n".join(lines) + "\n")
    return path


def passengers(path: Path, rows: int = 400, seed: int = 7, encoding: str = "utf-8") -> Path:
    """A titanic-like binary CSV: an ID, unique names, near-unique tickets, the target Survived in the middle."""
    rng = random.Random(seed)
    lines = ["PassengerId,Name,Survived,Ticket,Pclass,Sex,Age,Fare"]
    for i in range(rows):
        pclass, sex, age = rng.randint(1, 3), rng.choice(["male", "female"]), rng.randint(1, 80)
        fare = rng.uniform(5, 30) * (4 - pclass)
        odds = (1.5 if sex == "female" else -1.2) + (3 - pclass) * 0.8 - age / 60 + rng.gauss(0, 0.6)
        name = f"{rng.choice(['Smith', 'Müller', 'Dupont', 'Rossi'])}, Passenger {i}"
        lines.append(f'{i + 1},"{name}",{int(odds > 0)},T{rng.randint(10000, 99999)},{pclass},{sex},{age},{fare:.2f}')
    path.write_text("\n".join(lines) + "\n", encoding=encoding)
    return path


def wide_binary(path: Path, rows: int = 50_000, seed: int = 11) -> Path:
    """A large binary CSV: six numeric features, the label a noisy function of three of them."""
    rng = random.Random(seed)
    lines = ["a,b,c,d,e,f,label"]
    for _ in range(rows):
        xs = [rng.gauss(0, 1) for _ in range(6)]
        lines.append(",".join(f"{x:.3f}" for x in xs) + f",{int(xs[0] + xs[1] * xs[2] + rng.gauss(0, 0.3) > 0)}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the metrics, recomputed ---------------------------------------------------------------------------


def regression_metrics(actual: list[float], predicted: list[float]) -> dict[str, float]:
    n = len(actual)
    errors = [p - a for a, p in zip(actual, predicted, strict=True)]
    mean = sum(actual) / n
    total = sum((a - mean) ** 2 for a in actual)
    return {
        "rmse": math.sqrt(sum(e * e for e in errors) / n),
        "mae": sum(abs(e) for e in errors) / n,
        "r2": 1 - sum(e * e for e in errors) / total,
    }


def per_class(actual: list[int], predicted: list[int], classes: int) -> list[dict[str, float | int | None]]:
    out = []
    for k in range(classes):
        tp = sum(1 for a, p in zip(actual, predicted, strict=True) if a == k and p == k)
        support = sum(1 for a in actual if a == k)
        said = sum(1 for p in predicted if p == k)
        precision = tp / said if said else None
        recall = tp / support if support else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
        out.append({"precision": precision, "recall": recall, "f1": f1, "support": support})
    return out


def roc_auc(actual: list[int], scores: list[float]) -> float:
    """The share of (positive, negative) pairs the scores order correctly, ties counting half."""
    positives = [s for a, s in zip(actual, scores, strict=True) if a == 1]
    negatives = [s for a, s in zip(actual, scores, strict=True) if a == 0]
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


def shown_number(text: str) -> float:
    """A number as the lab shows it ("20,421", "0.9736", "78.3 %") back to a float (a share as 0..1)."""
    text = text.strip()
    if text.endswith("%"):
        return float(text.rstrip(" %").replace(",", "")) / 100
    return float(text.replace(",", ""))


def table_cells(lab: Lab, table: str) -> dict[str, list[str]]:
    """A results table's rows: {row header: [cell texts]}."""
    return lab.page.locator(f"{table} tbody tr").evaluate_all(
        "rows => Object.fromEntries(rows.map(r => [r.querySelector('th').textContent,"
        " [...r.querySelectorAll('td')].map(td => td.textContent)]))"
    )
