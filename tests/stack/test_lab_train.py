"""The lab's workbench in a real browser (Debian's Chromium through Playwright) against the local stack:
TF.js loads only when asked, the XOR demo trains on the CPU backend, Stop ends a run with the best
weights, model.json + weights.bin export and import back with the same predictions, the builder
validates and keeps its draft, and the backend ladder reports what it picked and why (the first load's
budget is test_lab_product's). Every test fails on any console error or page error."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from mllab_dev.stack import Stack

from . import lab_support
from .billing_support import wait
from .workbench_support import DONE, TRAIN_TIMEOUT_MS, Lab, lab  # noqa: F401  (the lab fixture)

XOR = [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]


def test_page_loads_clean_and_tfjs_waits_for_train(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    for signed_in in (False, True):
        if signed_in:
            lab.requests.clear()
            lab.sign_in(new_user())
        else:
            lab.open(wait_until="networkidle")
        lab.load_xor()
        assert not lab.tf_loaded()
        # no TF.js and no backend (uPlot may warm up once there is data to chart)
        assert not [u for u in lab.vendor_requests() if "/vendor/tf" in u]
        expect(lab.page.locator("#backend-status")).to_contain_text("picked when you train")
    lab.configure(epochs=5)
    lab.train()
    assert lab.tf_loaded()
    assert lab.page.evaluate("typeof window.tf") == "undefined"  # TF.js runs in the training worker only
    assert any(u.endswith("/vendor/tf.es2017.min.js") for u in lab.vendor_requests())
    # ?backend=cpu: WebGPU is never tried, so its backend script is not even fetched
    assert not any("tf-backend-webgpu" in u for u in lab.vendor_requests())


def test_xor_trains_on_cpu(lab: Lab, stack: Stack) -> None:
    from playwright.sync_api import expect

    lab.open()
    lab.load_xor()
    expect(lab.page.locator("#param-count")).to_have_attribute("data-count", "33")
    lab.configure(units=8, activation="tanh", optimizer="adam", lr=0.1, epochs=300, batch=4, seed=1)
    data = lab.train()
    assert data["state"] == "done", lab.page.locator("#train-message").text_content()
    first, final = float(data["firstLoss"]), float(data["finalLoss"])
    print(f"\nXOR 2-8-1 on cpu: 300 epochs in {int(data['elapsedMs'])} ms, loss {first:.4f} -> {final:.6f}")
    assert final < 0.1 and final < first / 2
    assert float(data["finalAcc"]) == 1.0
    status = lab.page.locator("#backend-status")
    expect(status).to_have_attribute("data-backend", "cpu")
    expect(status).to_contain_text("Backend: cpu")
    assert lab.page.locator("#train-chart canvas").count() >= 2  # loss and accuracy, drawn by uPlot
    expect(lab.page.locator("#train-progress")).to_contain_text("Epoch 300 of 300")
    matrix = lab.page.locator("#confusion-matrix")
    expect(matrix).to_have_attribute("data-matrix", "[[2,0],[0,2]]")
    expect(matrix).to_contain_text("actual 0")
    metrics = json.loads(lab.page.locator("#metrics-table").get_attribute("data-final"))
    assert metrics["acc"] == 1 and metrics["confusion_matrix"] == [[2, 0], [0, 2]]
    assert lab.predict(0, 1)[0] == "1"
    assert lab.predict(1, 1)[0] == "0"

    # A training run's metrics.json (docs/architecture.md), as the cloud panel uploads it
    m = lab.page.evaluate("""async () => {
        const {state} = await import('/js/state.js');
        return state.model.metrics; }""")
    assert m["schema"] == 1 and m["task"] == "binary" and m["backend"] == "cpu"
    assert m["params"]["layers"] == [{"units": 8, "activation": "tanh"}]
    assert m["params"]["optimizer"] == "adam" and m["params"]["learning_rate"] == 0.1
    assert (m["params"]["epochs"], m["params"]["batch_size"], m["params"]["seed"]) == (300, 4, 1)
    assert len(m["epochs"]) == 300 and set(m["epochs"][0]) == {"epoch", "loss", "val_loss", "acc", "val_acc"}
    assert m["final"]["confusion_matrix"] == [[2, 0], [0, 2]]
    assert m["started_at"] <= m["finished_at"]

    lab.screenshot("lab-trained")
    lab.resize(lab_support.PHONE)  # the charts follow the width
    lab.no_sideways_scroll()  # nothing sticks out on a phone
    lab.screenshot("lab-trained-phone")

    # Training again frees the previous model: the tensor count does not grow across runs.
    after_first = lab.num_tensors()
    for _ in range(2):
        assert lab.train()["state"] == "done"
        assert wait(lambda: lab.num_tensors() == after_first, timeout=5, interval=0.05), lab.num_tensors()


def test_stop_ends_a_long_run_with_the_best_weights(lab: Lab) -> None:
    from playwright.sync_api import expect

    lab.open()
    lab.load_xor()
    lab.configure(epochs=5000, patience=0)
    lab.page.get_by_role("button", name="Train", exact=True).click()
    panel = lab.page.locator("#train-panel")
    expect(panel).to_have_attribute("data-epoch", re.compile(r"^\d{2,}$"))  # ten epochs or more
    stop = lab.page.get_by_role("button", name="Stop")
    expect(stop).to_be_enabled()
    stop.click()
    lab.page.wait_for_selector(DONE, timeout=TRAIN_TIMEOUT_MS)
    data = lab.panel_data()
    assert data["state"] == "stopped"
    assert 10 <= int(data["epochsRun"]) < 5000
    message = lab.page.locator("#train-message")
    expect(message).to_contain_text(f"Stopped at epoch {data['epochsRun']} of 5000")
    expect(message).to_contain_text("best weights")
    expect(stop).to_be_disabled()
    expect(lab.page.get_by_role("button", name="Train", exact=True)).to_be_enabled()
    assert float(data["finalLoss"]) <= float(data["firstLoss"])
    lab.predict(0, 1)  # the stopped model is usable


def test_export_then_import_gives_the_same_predictions(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    lab.open()
    lab.load_xor()
    lab.configure(epochs=100)
    assert lab.train()["state"] == "done"
    before = {(x1, x2): lab.predict(x1, x2) for x1, x2, _ in XOR}

    downloads = []
    lab.page.on("download", lambda d: downloads.append(d))
    with lab.page.expect_download() as first:
        lab.page.get_by_role("button", name="Export model.json + weights.bin").click()
    deadline = time.monotonic() + 10
    while len(downloads) < 2 and time.monotonic() < deadline:
        lab.page.wait_for_timeout(50)
    assert first.value.suggested_filename == "model.json"
    assert sorted(d.suggested_filename for d in downloads) == ["model.json", "weights.bin"]
    saved = {}
    for d in downloads:
        saved[d.suggested_filename] = tmp_path / d.suggested_filename
        d.save_as(saved[d.suggested_filename])
    model = json.loads(saved["model.json"].read_text())
    assert model["weightsManifest"][0]["paths"] == ["weights.bin"]
    assert model["format"] == "layers-model"
    assert saved["weights.bin"].stat().st_size == 33 * 4  # 33 float32 parameters
    meta = model["userDefinedMetadata"]
    assert meta["preprocessor"]["feature_names"] == ["x1", "x2"]
    assert meta["preprocessor"]["target_encoding"]["labels"] == [0, 1]
    assert meta["spec"]["layers"] == [{"units": 8, "activation": "tanh"}]
    expect(lab.page.locator("#files-message")).to_contain_text("Exported model.json")

    # A renamed weights file is refused with a message that says what to do.
    renamed = tmp_path / "weights (1).bin"
    renamed.write_bytes(saved["weights.bin"].read_bytes())
    lab.page.set_input_files("#import-files", [saved["model.json"], renamed])
    lab.page.get_by_role("button", name="Import", exact=True).click()
    expect(lab.page.locator("#files-message")).to_contain_text('Rename it to weights.bin')

    # A fresh page (no trained model, TF.js not loaded) imports the two files and predicts the same: what
    # this browser kept of the workbench is forgotten first (Start over), else the reload would restore it.
    lab.page.get_by_role("button", name="Start over").click()
    expect(lab.page.locator("#workbench-saved")).to_contain_text("Started over")
    lab.open()
    assert not lab.tf_loaded()
    lab.page.get_by_label("Model files to import (model.json and weights.bin)").set_input_files(
        [saved["model.json"], saved["weights.bin"]]
    )
    lab.page.get_by_role("button", name="Import", exact=True).click()
    expect(lab.page.locator("#files-message")).to_contain_text("Imported model.json and weights.bin")
    expect(lab.page.locator("#backend-status")).to_have_attribute("data-backend", "cpu")
    for (x1, x2), (label, output) in before.items():
        again_label, again = lab.predict(x1, x2)
        assert again_label == label
        assert again == pytest.approx(output, abs=1e-6)


def test_builder_counts_validates_and_keeps_the_draft(lab: Lab) -> None:
    from playwright.sync_api import expect

    p = lab.page
    lab.open()
    lab.load_xor()
    count = p.locator("#param-count")
    lab.configure(units=8, activation="tanh", epochs=300, batch=4)
    expect(count).to_have_attribute("data-count", "33")  # 2*8 + 8 + 8*1 + 1
    expect(count).to_contain_text("2 inputs → 8 tanh → 1 sigmoid output: 33 parameters")
    p.get_by_role("button", name="Add a hidden layer").click()
    expect(p.get_by_label("Layer 2 units", exact=True)).to_be_focused()
    p.get_by_label("Layer 2 units", exact=True).fill("4")
    expect(count).to_have_attribute("data-count", str(2 * 8 + 8 + 8 * 4 + 4 + 4 + 1))
    p.get_by_role("button", name="Remove hidden layer 2").click()
    expect(count).to_have_attribute("data-count", "33")
    p.get_by_label("Layer 1 units", exact=True).fill("16")
    p.get_by_label("Learning rate").fill("0.05")
    expect(count).to_have_attribute("data-count", str(2 * 16 + 16 + 16 + 1))
    assert not lab.tf_loaded()

    p.reload()
    p.wait_for_selector("#train-button")
    expect(p.get_by_label("Layer 1 units", exact=True)).to_have_value("16")
    expect(p.get_by_label("Layer 1 activation", exact=True)).to_have_value("tanh")
    expect(p.get_by_label("Learning rate")).to_have_value("0.05")
    expect(p.locator("#b-batch")).to_have_value("4")
    expect(count).to_have_attribute("data-count", "65")  # assumed 2 inputs, 1 output before a dataset
    stored = json.loads(p.evaluate("localStorage.getItem('mllab.builder.v1')"))
    assert stored["layers"] == [{"units": 16, "activation": "tanh"}] and stored["learning_rate"] == 0.05

    lab.load_xor()
    train = p.get_by_role("button", name="Train", exact=True)
    expect(train).to_be_enabled()
    p.get_by_label("Layer 1 units", exact=True).fill("0")
    p.get_by_label("Learning rate").fill("0")
    errors = p.locator("#builder-errors")
    expect(errors).to_contain_text("Hidden layer 1: units must be a whole number")
    expect(errors).to_contain_text("The learning rate must be above 0")
    expect(p.get_by_label("Layer 1 units", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(train).to_be_disabled()
    expect(p.locator("#train-hint")).to_contain_text("Fix the model settings")
    p.get_by_label("Layer 1 units", exact=True).fill("8")
    p.get_by_label("Learning rate").fill("0.1")
    expect(train).to_be_enabled()
    expect(errors).to_be_empty()
    assert not lab.tf_loaded()


def test_backend_ladder_reports_what_it_picked(lab: Lab) -> None:
    from playwright.sync_api import expect

    status = lab.page.locator("#backend-status")
    picked = {}
    for query in ("?backend=webgl", ""):
        lab.open(query)
        lab.load_xor()
        lab.configure(epochs=20)  # GPU backends on SwiftShader take ~50 ms an epoch
        data = lab.train()
        assert data["state"] == "done", lab.page.locator("#train-message").text_content()
        assert float(data["finalLoss"]) < float(data["firstLoss"])
        backend = status.get_attribute("data-backend")
        reason = status.get_attribute("data-reason") or ""
        picked[query or "(default)"] = (backend, reason)
        if query == "?backend=webgl":
            # SwiftShader's WebGL, or the CPU fallback saying why
            assert backend == "webgl" or (backend == "cpu" and "WebGL unavailable" in reason), (backend, reason)
            if backend == "webgl":
                expect(status).to_contain_text("Backend: webgl (chosen)")
        else:
            # a small model: every backend that starts is timed on a batch and the fastest is kept
            assert backend in ("webgpu", "webgl", "wasm", "cpu")
            expect(status).to_contain_text("fastest for this model's size")
            expect(status).to_contain_text("CPU")
    print(f"\nbackends picked: {picked}")


def _csv(tmp_path: Path, name: str, header: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_multiclass_and_regression_csvs_train_with_a_held_out_split(lab: Lab, tmp_path: Path) -> None:
    """Beyond XOR: a three-class CSV (softmax head, 3x3 confusion matrix on held-out rows, a categorical
    feature in the prediction form) and a regression CSV (linear head, no accuracy) that stops early."""
    import random

    from playwright.sync_api import expect

    rng = random.Random(7)
    rows = []
    for i in range(90):
        x1, x2 = rng.uniform(0, 3), rng.uniform(-1, 1)
        rows.append(f"{x1:.3f},{x2:.3f},{'red' if i % 2 else 'blue'},{'abc'[int(x1)]}")
    classes = _csv(tmp_path, "classes.csv", "x1,x2,colour,label", rows)
    lab.open()
    lab.page.set_input_files("#data-file", classes)
    count = lab.page.locator("#param-count")
    lab.configure(units=8, activation="relu", lr=0.05, epochs=150, batch=16, patience=0)
    # inputs: x1, x2 and colour one-hot (blue, red, unseen) = 5; outputs: 3 classes
    expect(count).to_contain_text("5 inputs → 8 relu → 3 softmax outputs")
    expect(count).to_have_attribute("data-count", str(5 * 8 + 8 + 8 * 3 + 3))
    data = lab.train()
    assert data["state"] == "done", lab.page.locator("#train-message").text_content()
    assert float(data["finalLoss"]) < float(data["firstLoss"]) / 2
    matrix = json.loads(lab.page.locator("#confusion-matrix").get_attribute("data-matrix"))
    assert len(matrix) == 3 and all(len(r) == 3 for r in matrix)
    held_out = sum(map(sum, matrix))
    assert 15 <= held_out <= 21  # about a fifth of the 90 rows, stratified, held out
    assert sum(matrix[i][i] for i in range(3)) >= held_out - 3
    expect(lab.page.locator("#train-message")).not_to_contain_text("too small to hold rows out")
    lab.page.get_by_label("x1", exact=True).fill("2.5")
    lab.page.get_by_label("x2", exact=True).fill("0")
    lab.page.get_by_label("colour", exact=True).select_option("red")
    lab.page.locator("#predict-form").get_by_role("button", name="Predict").click()
    expect(lab.page.locator("#prediction")).to_have_attribute("data-label", "c")
    assert len(json.loads(lab.page.locator("#prediction").get_attribute("data-output"))) == 3

    rows = [
        f"{x1:.3f},{x2:.3f},{2 * x1 - x2 + rng.gauss(0, 0.05):.4f}"
        for x1, x2 in ((rng.uniform(-2, 2), rng.uniform(-2, 2)) for _ in range(80))
    ]
    lab.page.set_input_files("#data-file", _csv(tmp_path, "line.csv", "x1,x2,y", rows))
    lab.configure(units=8, activation="relu", lr=0.05, epochs=1000, batch=16, patience=5)
    expect(count).to_contain_text("2 inputs → 8 relu → 1 linear output")
    data = lab.train()
    assert data["state"] == "early-stopped", lab.page.locator("#train-message").text_content()
    assert int(data["epochsRun"]) < 1000
    expect(lab.page.locator("#train-message")).to_contain_text("Stopped early")
    expect(lab.page.locator("#train-message")).to_contain_text("best weights")
    assert "finalAcc" not in data
    expect(lab.page.locator("#confusion-matrix")).to_have_count(0)
    assert lab.page.locator("#train-chart canvas").count() >= 1
    lab.page.get_by_label("x1", exact=True).fill("1")
    lab.page.get_by_label("x2", exact=True).fill("0.5")
    lab.page.locator("#predict-form").get_by_role("button", name="Predict").click()
    expect(lab.page.locator("#prediction")).to_have_attribute("data-value", re.compile(r"."))
    assert abs(float(lab.page.locator("#prediction").get_attribute("data-value")) - 1.5) < 0.3
