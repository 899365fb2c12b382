"""The lab as a product, in Chromium against the local stack: the first screen says what it does and what
PRO costs, and a signed-out visitor trains a bundled sample in one click; the workbench comes back after a
reload and leaving during a run asks first; a saved CSV is uploaded once per project, a version keeps its
notes and opens with its run and dataset, usage follows a save; two runs compare side by side; the first
load stays within its byte budget; every screen fits a 390 px phone with readable contrast. Screenshots
of each screen at desktop and phone width go to build/screenshots/."""

from __future__ import annotations

import gzip
import re

from mllab.billing import entitlements, subscriptions
from mllab.files import catalog
from mllab.platform import config

from . import lab_support
from .conftest import docs_where
from .workbench_support import DONE, Lab, lab  # noqa: F401  (the lab fixture: the workbench page, checked clean)

FIRST_LOAD_BUDGET = 60 * 1024  # the first load before TF.js: at most 60 KB gzipped
SAMPLE_TIMEOUT_MS = 120_000  # a sample's guided run (150-300 epochs on cpu) on two loaded cores
SAVE_TIMEOUT_MS = 60_000
DESKTOP = {"width": 1280, "height": 900}


def _pro(user: dict) -> None:
    subscriptions.set_grant(user["uid"], lambda doc, now: entitlements.with_grant(doc, None, now))


def _train_sample(lab: Lab, name: str) -> dict[str, str]:
    lab.page.get_by_role("button", name=name).click()
    lab.page.wait_for_selector(DONE, timeout=SAMPLE_TIMEOUT_MS)
    return lab.panel_data()


def _predict_first_row(lab: Lab) -> str:
    """Fills the prediction form with the dataset's first row and answers the prediction's output."""
    from playwright.sync_api import expect

    out = lab.page.locator("#prediction")
    out.evaluate("e => { delete e.dataset.output; }")
    for field in lab.page.locator("#predict-form .field").all():
        control = field.locator("input, select")
        name = control.get_attribute("name")
        value = lab.page.evaluate("(n) => import('/js/state.js').then(({state}) => state.dataset.rows[0][n])", name)
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(str(value))
        else:
            control.fill(str(value))
    lab.page.locator("#predict-form").get_by_role("button", name="Predict").click()
    expect(out).to_have_attribute("data-output", re.compile(r"^\["))
    return out.get_attribute("data-output")


def _screens(lab: Lab, name: str) -> None:
    """Desktop and phone screenshots of the page as it is, with the phone's width and contrast checked."""
    lab.resize(DESKTOP)  # charts follow the width
    assert lab.low_contrast() == [], name
    lab.screenshot(f"product-{name}-desktop")
    lab.resize(lab_support.PHONE)
    lab.no_sideways_scroll(name)
    assert lab.low_contrast() == [], f"{name} (phone)"
    lab.screenshot(f"product-{name}-phone")
    lab.page.set_viewport_size(DESKTOP)


# --- signed out ---------------------------------------------------------------------------------------


def test_the_first_screen_shows_the_product_and_its_price_and_a_visitor_trains_a_sample(lab: Lab) -> None:
    from playwright.sync_api import expect

    lab.page.set_viewport_size(DESKTOP)
    lab.open(wait_until="networkidle")
    intro = lab.page.locator("#intro")
    expect(intro).to_be_visible()
    expect(intro).to_contain_text("in your browser")
    pro = config.PLANS["pro"]
    price = f"${float(pro.price):.0f}"  # the plan's price as the API answers it ($15)
    expect(lab.page.locator("#hero-price")).to_have_text(price)
    expect(lab.page.locator("#pricing")).to_contain_text("Free")
    expect(lab.page.locator("#pricing")).to_contain_text("No account needed")
    expect(lab.page.locator("#hero-limits")).to_contain_text(f"{pro.uploads_per_day} uploads a day")
    # The sign-in sits beside the pitch, not in front of it.
    expect(lab.page.locator("#signed-out")).to_be_visible()
    # Each sample names its licence.
    expect(lab.page.locator("[data-sample=iris] .licence")).to_contain_text("CC BY 4.0")
    expect(lab.page.locator("[data-sample=penguins] .licence")).to_contain_text("CC0")
    _screens(lab, "first-screen")

    # One click: the Iris sample loads with its target, a model suited to it, and trains, signed out.
    data = _train_sample(lab, "Train on Iris")
    assert data["state"] in ("done", "early-stopped"), lab.page.locator("#train-message").text_content()
    assert float(data["finalAcc"]) > 0.8, data
    expect(lab.page.locator("#data-summary")).to_contain_text("target species")
    expect(lab.page.locator("#samples-message")).to_contain_text("150 rows")
    expect(lab.page.locator("#b-lr")).to_have_value("0.01")
    # The focus stays with the person: on the outcome, not on the page's body.
    assert lab.page.evaluate("document.activeElement.id") == "train-message"
    expect(lab.page.locator("#predict-form")).to_be_visible()
    expect(lab.page.locator("#cloud-signed-out")).to_contain_text("sign in")
    _screens(lab, "sample-trained")


def test_a_regression_sample_trains_in_one_click_too(lab: Lab) -> None:
    from playwright.sync_api import expect

    lab.open()
    data = _train_sample(lab, "Train on body mass")
    assert data["state"] in ("done", "early-stopped"), lab.page.locator("#train-message").text_content()
    expect(lab.page.locator("#data-summary")).to_contain_text("target body_mass_g")
    assert "finalAcc" not in data  # a regression has no accuracy
    # The ignored column (year) reads as ignored, and its grey text keeps 4.5:1.
    ignored = lab.page.locator("#data-columns tr.role-ignore")
    expect(ignored).to_have_count(1)
    expect(ignored).to_contain_text("year")
    assert lab.low_contrast() == []


def test_the_train_button_keeps_the_keyboard_focus_in_the_workbench(lab: Lab) -> None:
    lab.open()
    lab.load_xor()
    lab.configure(epochs=40)
    lab.page.locator("#train-button").focus()
    lab.page.keyboard.press("Enter")
    lab.page.wait_for_selector(DONE)
    assert lab.page.evaluate("document.activeElement.id") == "train-message"
    assert lab.page.evaluate("document.activeElement !== document.body")


# --- work that persists -----------------------------------------------------------------------------------


def test_a_reload_restores_the_data_the_roles_and_the_trained_model(lab: Lab) -> None:
    from playwright.sync_api import expect

    lab.open()
    _train_sample(lab, "Train on penguins")
    # A role changed by hand after training: the island is ignored from now on.
    lab.page.get_by_label("Role of island").select_option("ignore")
    before = _predict_first_row(lab)
    columns = lab.page.evaluate("import('/js/state.js').then(({state}) => state.dataset.columns)")
    lab.page.evaluate("import('/js/persist.js').then((p) => p.flushed())")

    lab.page.reload()
    lab.page.wait_for_selector("#predict-form")
    expect(lab.page.locator("#workbench-saved")).to_contain_text("Restored your dataset and trained model")
    assert lab.page.evaluate("import('/js/state.js').then(({state}) => state.dataset.columns)") == columns
    expect(lab.page.get_by_label("Role of island")).to_have_value("ignore")
    expect(lab.page.locator("#data-summary")).to_contain_text("333 rows")
    expect(lab.page.locator("#train-progress")).to_contain_text("Last run")
    assert lab.page.locator("#train-chart canvas").count() >= 2  # the last run's curves
    assert _predict_first_row(lab) == before


def test_leaving_during_training_asks_first(lab: Lab) -> None:
    lab.open()
    lab.load_xor()
    lab.configure(epochs=5000, patience=0)
    lab.page.get_by_role("button", name="Train", exact=True).click()
    lab.page.wait_for_selector("#train-panel[data-state=training]")
    asked = []

    def answer(dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()  # stay on the page

    lab.page.on("dialog", answer)
    lab.page.close(run_before_unload=True)
    lab.page.wait_for_timeout(500)
    assert asked == ["beforeunload"]
    assert not lab.page.is_closed()
    assert lab.panel_data()["state"] == "training"  # the run goes on
    lab.page.get_by_role("button", name="Stop").click()
    lab.page.wait_for_selector(DONE)
    # Not training: leaving asks nothing.
    lab.page.close(run_before_unload=True)
    lab.page.wait_for_event("close")
    assert asked == ["beforeunload"]


# --- the cloud: one dataset per content, notes, a version with its run, usage ----------------------------------


def test_the_same_csv_saved_twice_is_one_dataset_and_versions_keep_notes_and_runs(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    _pro(user)
    lab.sign_in(user)
    page = lab.page
    usage = page.locator("#usage")
    expect(usage).to_contain_text("Storage: 0 B of")
    _train_sample(lab, "Train on Iris")
    page.fill("#cloud-new-project", "Flowers")
    page.fill("#cloud-model-name", "iris-net")
    page.fill("#cloud-notes", "First try: 16 relu units")
    page.get_by_role("button", name="Save to cloud").click()
    expect(page.locator("#cloud-message")).to_have_text("Saved as version 1 with your notes.", timeout=SAVE_TIMEOUT_MS)
    # Usage follows the save without a reload.
    expect(usage).not_to_contain_text("Storage: 0 B of")
    expect(usage).to_contain_text("Uploads today: 4 of")  # weights, model.json, the CSV, the run

    # The same CSV trained again and saved again: a second version, the dataset not uploaded again.
    page.fill("#b-lr", "0.02")
    lab.train(timeout=SAMPLE_TIMEOUT_MS)
    page.get_by_role("button", name="Save to cloud").click()
    expect(page.locator("#cloud-message")).to_have_text("Saved as version 2.", timeout=SAVE_TIMEOUT_MS)
    expect(page.locator("#cloud-steps")).to_contain_text("dataset already saved (iris.csv): not uploaded again")
    datasets = docs_where(catalog.DATASETS, "uid", user["uid"])
    assert len(datasets) == 1, datasets
    jobs = docs_where(catalog.JOBS, "uid", user["uid"])
    assert sorted(j["version"] for j in jobs) == [1, 2]
    assert {j["dataset_id"] for j in jobs} == {datasets[0]["id"]}
    expect(usage).to_contain_text("Uploads today: 7 of")

    # Notes: shown with version 1, added to version 2 from the library, stored with the version.
    model = page.locator("#library-models > li").filter(has_text="iris-net")
    expect(model.locator("[data-version='1'] .lib-notes")).to_have_text("First try: 16 relu units")
    model.get_by_role("button", name="Add notes for v2 of iris-net").click()
    page.get_by_label("Notes for v2 of iris-net", exact=True).fill("Learning rate 0.02")
    page.get_by_role("button", name="Save notes").click()
    expect(page.locator("#library-models-message")).to_contain_text("Saved the notes for iris-net v2")
    expect(model.locator("[data-version='2'] .lib-notes")).to_have_text("Learning rate 0.02")
    stored = docs_where(catalog.MODELS, "uid", user["uid"])[0]
    version = catalog.version_ref(stored["id"], 2).get().to_dict()
    assert version["notes"] == "Learning rate 0.02"

    # A version opened from the library comes with its run and dataset, at the workbench's top.
    page.evaluate("import('/js/state.js').then(({state}) => state.set('dataset', null))")
    model.get_by_role("button", name="Load v1 of iris-net").click()
    expect(page.locator("#library-models-message")).to_contain_text("with its training run and its dataset")
    expect(page.locator("#workbench-title")).to_be_focused()
    top = page.evaluate("document.getElementById('workbench-title').getBoundingClientRect().top")
    assert -1 <= top < 200, top  # scrolled to the top (give or take a sub-pixel), not 2,700 px below
    expect(page.locator("#data-summary")).to_contain_text("iris.csv: 150 rows")
    expect(page.locator("#train-progress")).to_contain_text("Last run")
    expect(page.locator("#metrics-table")).to_be_visible()
    _screens(lab, "signed-in-library")


def test_two_runs_compare_side_by_side(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    _pro(user)
    lab.sign_in(user)
    page = lab.page
    lab.load_xor()
    for lr, version in ((0.1, 1), (0.001, 2)):
        lab.configure(epochs=80, lr=lr)
        lab.train()
        page.fill("#cloud-model-name", "xor-net")
        page.get_by_role("button", name="Save to cloud").click()
        expect(page.locator("#cloud-message")).to_have_text(f"Saved as version {version}.", timeout=SAVE_TIMEOUT_MS)
    runs = page.locator("#library-jobs > tr")
    expect(runs).to_have_count(2)
    compare = page.locator("#compare-runs")
    expect(compare).to_be_disabled()
    for label in ("xor-net v1: compare", "xor-net v2: compare"):
        page.get_by_label(label).check()
    expect(compare).to_have_text("Compare selected runs (2)")
    compare.click()
    table = page.locator("#compare-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table).to_contain_text("Validation accuracy")
    # Best first: the ranking's values never get worse down the table.
    values = [float(v) for v in table.locator("tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.value)")]
    assert values == sorted(values, reverse=True), values
    # Their parameters side by side, and both curves overlaid in each chart.
    expect(table).to_contain_text("0.1")
    expect(table).to_contain_text("0.001")
    expect(page.locator("#compare-chart .chart")).to_have_count(2)
    series = page.locator("#compare-chart .chart").first.locator(".u-legend .u-series")
    expect(series).to_have_count(3)  # the epoch axis and one line per run
    expect(page.locator("#compare-title")).to_be_focused()
    _screens(lab, "compare-runs")


# --- the first load --------------------------------------------------------------------------------------------


def test_the_first_load_stays_within_its_budget_before_tfjs(lab: Lab) -> None:
    """What travels on a first visit: the response bodies on the wire (gzipped by the origin, as the CDN
    does), counted from Chromium's network events, at most 60 KB, with no TF.js or uPlot among them. The
    local stack's /healthz (the status section only it has) is not part of the deployed lab's load."""
    cdp = lab.context.new_cdp_session(lab.page)
    cdp.send("Network.enable")
    urls: dict[str, str] = {}
    wire: dict[str, int] = {}
    cdp.on("Network.requestWillBeSent", lambda e: urls.__setitem__(e["requestId"], e["request"]["url"]))
    finished: dict[str, int] = {}  # with the headers: the count for a response whose data events carry none
    cdp.on(
        "Network.dataReceived",
        lambda e: wire.__setitem__(e["requestId"], wire.get(e["requestId"], 0) + int(e["encodedDataLength"])),
    )
    cdp.on("Network.loadingFinished", lambda e: finished.__setitem__(e["requestId"], int(e["encodedDataLength"])))
    bodies: dict[str, bytes] = {}

    def keep(response) -> None:
        if response.url.startswith(lab.stack.gateway_url) and response.status == 200:
            bodies[response.url.removeprefix(lab.stack.gateway_url)] = response.body()

    lab.page.on("response", keep)
    lab.page.goto(f"{lab.stack.gateway_url}/", wait_until="networkidle")
    lab.page.wait_for_timeout(500)
    lab.page.remove_listener("response", keep)
    cdp.detach()
    assert not lab.tf_loaded()
    loaded = {urls[r].removeprefix(lab.stack.gateway_url): wire.get(r) or n for r, n in finished.items() if r in urls}
    loaded.pop("/healthz", None)
    bodies.pop("/healthz", None)
    # No vendor library but Papa Parse (no TF.js, no uPlot); the page's own parts are all there.
    assert not [u for u in loaded if "/vendor/" in u and "papaparse" not in u], list(loaded)
    assert {"/", "/lab.css", "/js/workbench.js", "/config.json"} <= set(bodies)
    on_wire = sum(loaded.values())
    zipped = sum(len(gzip.compress(b, 9)) for b in bodies.values())
    print(f"\nfirst load: {on_wire} bytes on the wire, {zipped} gzipped (-9), {len(loaded)} responses")
    for path, n in sorted(loaded.items(), key=lambda kv: -kv[1]):
        print(f"  {n:7d}  {path}")
    assert on_wire <= FIRST_LOAD_BUDGET
    assert zipped <= FIRST_LOAD_BUDGET
    # The origin compresses text: the workbench's script travels in fewer bytes than it has.
    assert loaded["/js/workbench.js"] < len(bodies["/js/workbench.js"])


def test_the_signed_in_screens_fit_a_phone(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    expect(lab.page.locator("#intro")).to_be_hidden()
    expect(lab.page.locator("#billing")).to_be_visible()
    expect(lab.page.locator("#subscribe")).to_be_visible()
    expect(lab.page.locator("#nav-account")).to_have_text("Account")
    expect(lab.page.locator("#cloud-project")).to_contain_text("New project")  # the projects were listed
    expect(lab.page.locator("#cloud-message")).to_have_text("")
    # The money buttons are the page's large primary buttons, not its smallest.
    heights = lab.page.evaluate(
        "['#subscribe', '#promo-form button'].map((s) => document.querySelector(s).getBoundingClientRect().height)"
    )
    logout = lab.page.locator("#logout").evaluate("b => b.getBoundingClientRect().height")
    assert min(heights) >= logout, (heights, logout)
    _screens(lab, "signed-in-account")
    lab.page.locator("#account-details summary").click()
    _screens(lab, "signed-in-account-details")
