"""Models trained by the lab in Chromium, for the serving tests: a CSV opened in the data panel, the
hidden layers set in the builder, Train pressed; then the two files the lab saves (model.json +
weights.bin, from the same exportArtifacts the Export button and the cloud save use) and TF.js's
own predictions for raw rows (js/train.js predict, the prediction form's path)."""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mllab.billing import entitlements, subscriptions
from mllab.files import catalog, objects, schemas
from mllab.serving import predict

from .limits_support import upload, wait
from .workbench_support import Lab

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "lab_model"  # a model the lab saved, with TF.js's predictions


@dataclass(frozen=True)
class Trained:
    """A lab model's files and what TF.js predicted for `rows` with it."""

    task: str
    model_json: bytes
    weights: bytes
    rows: list[dict[str, Any]]
    tfjs: list[dict[str, Any]]  # {"output": [...], "label"?, "probabilities"?, "value"?} per row

    @property
    def preprocessor(self) -> dict[str, Any]:
        return json.loads(self.model_json)["userDefinedMetadata"]["preprocessor"]


# --- datasets: every preprocessing kind the lab fits --------------------------------------------------


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    cell = lambda v: "" if v is None else str(v)  # noqa: E731
    return "\n".join([",".join(header), *(",".join(cell(v) for v in r) for r in rows)]) + "\n"


def churn_csv(n: int = 120, seed: int = 7) -> str:
    """Binary: numeric features with missing cells (mean imputation + a missing indicator), a
    categorical plan with missing cells, a categorical code mixing text and numbers (so categories
    are spelled as JavaScript spells numbers), and a yes/no target."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        tenure = r.randint(0, 72)
        monthly = round(r.uniform(10, 120), 2)
        plan = r.choice(["basic", "pro", "team", None])
        code = r.choice(["a", "b", 1, 2.5, "1e-7", 300])
        score = -0.04 * tenure + 0.02 * monthly + (0.8 if plan == "basic" else 0) + r.gauss(0, 0.6)
        rows.append([None if r.random() < 0.1 else tenure, monthly, plan, code, "yes" if score > 0.6 else "no"])
    return _csv(["tenure", "monthly", "plan", "code", "churned"], rows)


def flowers_csv(n: int = 150, seed: int = 11) -> str:
    """Multiclass: three species from four measurements and a colour (categorical)."""
    r = random.Random(seed)
    centres = {"setosa": (5.0, 3.4, 1.5, 0.2), "versicolor": (5.9, 2.8, 4.3, 1.3), "virginica": (6.6, 3.0, 5.6, 2.0)}
    colours = {"setosa": ["white", "blue"], "versicolor": ["blue", "violet"], "virginica": ["violet", "purple"]}
    rows = []
    for i in range(n):
        species = list(centres)[i % 3]
        m = [round(c + r.gauss(0, 0.35), 2) for c in centres[species]]
        rows.append([*m, r.choice(colours[species]), species])
    return _csv(["sepal_length", "sepal_width", "petal_length", "petal_width", "colour", "species"], rows)


def houses_csv(n: int = 120, seed: int = 3) -> str:
    """Regression: a price (target units, mean ~40) from an area with missing cells, rooms, a city
    with missing cells, and a true/false garden (read as booleans, a categorical feature)."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        area = round(r.uniform(30, 160), 1)
        rooms = r.randint(1, 6)
        city = r.choice(["Lyon", "Paris", "Nice", None])
        garden = r.choice(["true", "false"])
        price = 0.25 * area + 2 * rooms + (8 if city == "Paris" else 0) + (3 if garden == "true" else 0)
        rows.append([None if r.random() < 0.12 else area, rooms, city, garden, round(price + r.gauss(0, 2), 2)])
    return _csv(["area", "rooms", "city", "garden", "price"], rows)


# Rows the server must read as the page does: training-like rows, and the awkward ones (missing
# values three ways, text numbers with spaces, categories never seen, numbers as categories).
CHURN_EXTRA = [
    {"tenure": None, "monthly": 55.5, "plan": None, "code": "a"},
    {"tenure": "  12 ", "monthly": "99.9", "plan": "enterprise", "code": 2.5},
    {"tenure": "NA", "monthly": 10, "plan": "pro", "code": "1e-7"},
    {"tenure": "", "monthly": 0, "plan": "team", "code": 300.0},
    {"tenure": 72, "monthly": 120, "plan": "basic", "code": "0.0000001"},
]
FLOWERS_EXTRA = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "colour": "white"},
    {"sepal_length": "6.3", "sepal_width": 2.9, "petal_length": 5.6, "petal_width": 1.8, "colour": "green"},
    {"sepal_length": None, "sepal_width": None, "petal_length": None, "petal_width": None, "colour": None},
]
HOUSES_EXTRA = [
    {"area": None, "rooms": 3, "city": "Paris", "garden": True},
    {"area": "85.5", "rooms": "2", "city": "Marseille", "garden": "FALSE"},
    {"area": 200, "rooms": 6, "city": None, "garden": "true"},
]


# --- the lab ---------------------------------------------------------------------------------------


class ServingLab(Lab):
    """The workbench, driven to train a CSV model and hand over its files and TF.js predictions."""

    def open_csv(self, path: Path) -> None:
        from playwright.sync_api import expect

        self.page.locator("#data-panel").get_by_label("Open a CSV file").set_input_files(str(path))
        expect(self.page.locator("#data-panel")).to_contain_text(f"Loaded {path.name}")
        expect(self.page.locator("#param-count")).not_to_contain_text("assuming")

    def set_layers(self, layers: list[tuple[int, str]]) -> None:
        p = self.page
        while p.locator("#b-layers li:not(.empty)").count() > len(layers):
            p.get_by_role("button", name=f"Remove hidden layer {p.locator('#b-layers li').count()}").click()
        for i, (units, activation) in enumerate(layers):
            if p.locator(f"#b-units-{i}").count() == 0:
                p.click("#b-add-layer")
            p.fill(f"#b-units-{i}", str(units))
            p.select_option(f"#b-activation-{i}", activation)

    def train_csv(self, path: Path, layers: list[tuple[int, str]], *, epochs: int = 60, lr: float = 0.01) -> str:
        """Opens the CSV, sets the builder and trains; returns the task the lab trained for."""
        self.open_csv(path)
        self.set_layers(layers)
        for sel, value in (("#b-lr", lr), ("#b-epochs", epochs), ("#b-batch", 16), ("#b-seed", 5), ("#b-patience", 0)):
            self.page.fill(sel, str(value))
        data = self.train()
        assert data["state"] == "done", self.page.locator("#train-message").text_content()
        return self.page.evaluate("async () => (await import('/js/state.js')).state.model.spec.task")

    def trained(self, task: str, rows: list[dict[str, Any]], *, scaling: str | None = None) -> Trained:
        """The trained model's files and TF.js's predictions for `rows`. With `scaling`, the model is
        saved with a preprocessor refitted on the same training rows with that scaling (data.js
        supports "minmax"; the workbench always fits "zscore")."""
        got = self.page.evaluate(
            """async ([rows, scaling]) => {
                const {state} = await import('/js/state.js');
                const {exportArtifacts} = await import('/js/model.js');
                const train = await import('/js/train.js');
                const fit = await import('/js/fit.js');
                const data = await import('/js/data.js');
                const m = state.model;
                let pre = m.preprocessor;
                if (scaling) {
                    const {trainRows} = fit.prepare(m.dataset, m.spec.task, m.spec.seed);
                    pre = data.fitPreprocessor(trainRows, m.dataset.columns, m.spec.task, m.dataset.target, {scaling});
                }
                const {json, bin} = await exportArtifacts(m.model, {preprocessor: pre, spec: m.spec});
                const bytes = new Uint8Array(bin);
                let text = "";
                for (let i = 0; i < bytes.length; i += 0x8000) {
                    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
                }
                const predictions = [];
                for (const row of rows) predictions.push(await train.predict(m.model, pre, row));
                return {json, bin: btoa(text), predictions};
            }""",
            [rows, scaling],
        )
        return Trained(task, got["json"].encode(), base64.b64decode(got["bin"]), rows, got["predictions"])

    def dataset_rows(self) -> list[dict[str, Any]]:
        """The loaded dataset's rows as the page parsed them, without the target (feature values only)."""
        return self.page.evaluate(
            """async () => {
                const {state} = await import('/js/state.js');
                const d = state.dataset;
                const features = d.columns.filter((c) => c.role === 'feature').map((c) => c.name);
                return d.rows.map((r) => Object.fromEntries(features.map((f) => [f, r[f]])));
            }"""
        )


# --- saved models and plans, at the domain level ------------------------------------------------------


def pro(uid: str) -> None:
    subscriptions.set_grant(uid, lambda doc, now: entitlements.with_grant(doc, None, now))
    predict.reset()  # the predict path's view of an owner is up to OWNER_TTL_S old


def not_pro(uid: str) -> None:
    subscriptions.set_grant(uid, lambda doc, now: entitlements.without_grants(doc))
    predict.reset()


def saved_version(uid: str, model_json: bytes, weights: bytes, model: dict | None = None) -> tuple[dict, int]:
    """A model (new, or `model`) with a new version whose files are in the bucket and recorded."""
    if model is None:
        project = catalog.create_project(uid, schemas.CreateProject(name="p"))
        model = catalog.create_model(uid, schemas.CreateModel(project_id=project["id"], name="churn"))
    n = catalog.allocate_version(uid, model["id"])["version"]
    for kind, data, ctype in (
        ("weights", weights, "application/octet-stream"),
        ("model", model_json, "application/json"),
    ):
        upload(str(objects.model_file(uid, model["project_id"], model["id"], n, kind)), data, ctype)
    wait(lambda: catalog.version_ref(model["id"], n).get().to_dict().get("status") in ("ready", "failed"))
    return model, n


def golden_files() -> tuple[bytes, bytes, dict[str, Any]]:
    """tests/golden/lab_model: (model.json, weights.bin, {"rows", "predictions"} TF.js made with it)."""
    return (
        (GOLDEN / "model.json").read_bytes(),
        (GOLDEN / "weights.bin").read_bytes(),
        json.loads((GOLDEN / "tfjs_predictions.json").read_text()),
    )


def synthetic_files(task: str) -> tuple[bytes, bytes]:
    """Lab-shaped files of a `task` model (every preprocessing kind) without a browser, made by
    tests/unit/serving_support.py (the unit tests' and the predict bench's builder)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "unit" / "serving_support.py"
    spec = importlib.util.spec_from_file_location("unit_serving_support", path)
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    features = [
        builder.numeric("age", mean=40.0, std=12.0, missing_indicator=True),
        builder.numeric("income", mean=5.0, std=2.0, lo=0.0, hi=20.0, scaling="minmax"),
        builder.categorical("plan", ["basic", "pro", "__missing__"]),
    ]
    return builder.files(features, [(8, "relu"), (4, "tanh")], task)


def used_up(uid: str, predictions: int) -> None:
    """Records `predictions` of this month for `uid` in one metering shard, as the predict path writes them
    (and marks the user as having deployed, as the deployment they were made with did)."""
    from mllab.identity import users
    from mllab.platform import clients, clock
    from mllab.serving import deployments, metering

    month = metering.month_of()
    users.update(uid, **{deployments.DEPLOYED_AT: clock.now()})
    clients.firestore().collection(metering.COLLECTION).document(f"{uid}_{month}_0").set(
        {"uid": uid, "month": month, "shard": 0, "count": predictions, "by_deployment": {}, "updated_at": clock.now()}
    )


def user_doc(uid: str) -> dict:
    """The stored users/<uid> document."""
    from mllab.identity import users
    from mllab.platform import clients

    return clients.firestore().collection(users.USERS).document(uid).get().to_dict() or {}


def counted(uid: str, month: str, shard: int, by_deployment: dict[str, int]) -> None:
    """One metering shard of `uid` for `month`, as the predict path's flush leaves it."""
    from mllab.platform import clients, clock
    from mllab.serving import metering

    clients.firestore().collection(metering.COLLECTION).document(f"{uid}_{month}_{shard}").set(
        {
            "uid": uid,
            "month": month,
            "shard": shard,
            "count": sum(by_deployment.values()),
            "by_deployment": by_deployment,
            "updated_at": clock.now(),
        }
    )
