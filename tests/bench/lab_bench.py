"""`make bench`, the lab's part, in headless Chromium against a running stack's gateway:

- first load: every byte the page fetches from its origin before anyone acts (HTML, JS, CSS,
  /config.json), gzipped at level 9 as a CDN would, with TF.js, uPlot and Papa Parse still unloaded;
- time to interactive: navigation start until the sign-in form and the workbench are both usable
  (the silent refresh answered), from the page's own performance clock;
- training per backend the browser can start (`?backend=`: WebGPU, WebGL, WASM, CPU), as the page
  reports it (its elapsedMs: the fit in the training worker, TF.js load and backend start excluded):
  a small model (XOR, 2-8-1, 300 epochs, batch 4) and a medium one (5,000 rows of 20 features,
  20-64-64-1, 5 epochs, batch 64).
Numbers only; nothing here passes or fails."""

from __future__ import annotations

import contextlib
import gzip
import random
import statistics
import tempfile
from pathlib import Path

from mllab_dev.browser import CHROMIUM_ARGS, executable

PAGE_LOADS = 5
XOR_RUNS = 3
MEDIUM_RUNS = 2
BACKENDS = ("webgpu", "webgl", "wasm", "cpu")
DONE = "#train-panel:is([data-state=done],[data-state=stopped],[data-state=early-stopped],[data-state=error])"
READY = "() => !document.querySelector('#signed-out').hidden && document.querySelector('#train-button') !== null"


def first_loads(browser, url: str) -> list[tuple[int, float, int]]:
    """(gzipped bytes, ms to interactive, responses) for PAGE_LOADS fresh visitors."""
    out = []
    for _ in range(PAGE_LOADS):
        context = browser.new_context()
        page = context.new_page()
        bodies: dict[str, bytes] = {}

        def keep(response, bodies=bodies) -> None:
            if (
                response.url.startswith(url)
                and response.status not in (204, 301, 302)
                and "/healthz" not in response.url
            ):
                with contextlib.suppress(Exception):  # a response without a body
                    bodies[response.url] = response.body()

        page.on("response", keep)
        page.goto(url + "/")
        page.wait_for_function(READY)
        tti = page.evaluate("performance.now()")
        page.wait_for_load_state("networkidle")
        if any("/vendor/tf" in u for u in bodies):  # TF.js loads in the training worker, never on window
            raise RuntimeError("TF.js loaded before anyone asked for it")
        out.append((sum(len(gzip.compress(b, 9)) for b in bodies.values()), tti, len(bodies)))
        context.close()
    return out


def medium_csv(folder: Path) -> Path:
    """5,000 rows of 20 numeric features and a binary label."""
    rng = random.Random(1)
    lines = [",".join([f"x{i}" for i in range(20)] + ["label"])]
    for _ in range(5000):
        xs = [rng.gauss(0, 1) for _ in range(20)]
        lines.append(",".join(f"{x:.3f}" for x in xs) + f",{int(sum(xs[:5]) - xs[5] * xs[6] > 0)}")
    path = folder / "medium.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def training(browser, url: str, backend: str, model: str, csv: Path) -> tuple[str, str, list[float]]:
    """(backend picked, why not the requested one, elapsed ms per run) for the small or medium model."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(300_000)
    page.goto(f"{url}/?backend={backend}")
    if model == "small":
        page.locator("#data-panel").get_by_role("button", name="Load the XOR demo").click()
        layers, fields = [(8, "tanh")], (("#b-lr", 0.1), ("#b-epochs", 300), ("#b-batch", 4))
    else:
        page.set_input_files("#data-file", csv)
        page.locator("#data-summary").filter(has_text="medium.csv").wait_for()
        layers, fields = [(64, "relu"), (64, "relu")], (("#b-lr", 0.01), ("#b-epochs", 5), ("#b-batch", 64))
    for i, (units, activation) in enumerate(layers):
        if i:
            page.get_by_role("button", name="Add a hidden layer").click()
        page.get_by_label(f"Layer {i + 1} units", exact=True).fill(str(units))
        page.get_by_label(f"Layer {i + 1} activation", exact=True).select_option(activation)
    page.select_option("#b-optimizer", "adam")
    for sel, value in (*fields, ("#b-seed", 1), ("#b-patience", 0)):
        page.fill(sel, str(value))
    times, picked, reason = [], "", ""
    for _ in range(XOR_RUNS if model == "small" else MEDIUM_RUNS):
        page.get_by_role("button", name="Train", exact=True).click()
        page.wait_for_selector(DONE)
        data = page.locator("#train-panel").evaluate("e => ({...e.dataset})")
        if data.get("state") != "done":
            raise RuntimeError(f"{model} training on {backend} ended {data.get('state')}")
        times.append(float(data["elapsedMs"]))
        status = page.locator("#backend-status")
        picked = status.get_attribute("data-backend") or ""
        reason = "" if picked == backend else (status.text_content() or "")
    context.close()
    return picked, reason, times


def training_section(browser, url: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        csv = medium_csv(Path(folder))
        for model, title, runs in (
            ("small", "XOR 2-8-1, 300 epochs", XOR_RUNS),
            ("medium", "5k rows, 20-64-64-1, 5 epochs", MEDIUM_RUNS),
        ):
            print(f"\n{title:34} {'median ms':>10} {'min-max':>15}  ({runs} runs; 1st includes warm-up)")
            for backend in BACKENDS:
                try:
                    picked, reason, times = training(browser, url, backend, model, csv)
                except Exception as exc:  # noqa: BLE001 - a backend that cannot run is a result too
                    print(f"{backend:34} {'failed':>10}  {str(exc).splitlines()[0][:90]}")
                    continue
                if picked != backend:
                    print(f"{backend:34} {'n/a':>10}  not available here: {reason[:110]}")
                    continue
                print(f"{backend:34} {statistics.median(times):10.0f} {min(times):6.0f}-{max(times):<8.0f}")


def lab_section(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable(), args=CHROMIUM_ARGS)
        try:
            loads = first_loads(browser, url)
            size = statistics.median(b for b, _, _ in loads)
            print(f"\n{'lab, ' + str(PAGE_LOADS) + ' fresh visitors':28} {'median':>10} {'min-max':>15}")
            print(
                f"{'first load (gzip -9)':28} {size / 1024:8.1f} KB {'':>15}  ({loads[0][2]} responses; budget 60 KB)"
            )
            ttis = [t for _, t, _ in loads]
            print(f"{'time to interactive':28} {statistics.median(ttis):8.0f} ms {min(ttis):6.0f}-{max(ttis):<6.0f}")

            training_section(browser, url)
        finally:
            browser.close()
