"""Your library in Chromium against the local stack: after saving an XOR model and a CSV-trained model
the library lists the project, both models with their ready versions, the CSV dataset and both
training runs with their final metrics; a run's curves, final metrics and confusion matrix come back
from its metrics.json; a dataset opens in the workbench; a project is renamed and a run deleted (in
Firestore too); lists page with "Show more"; a pending version shows as pending, a free user keeps
their lists, and another user's library is empty."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mllab.billing import entitlements, subscriptions
from mllab.files import catalog
from mllab.platform import clients
from mllab_dev.stack import Stack

from . import lab_support
from .conftest import PASSWORD, docs_where
from .workbench_support import Lab, lab  # noqa: F401  (the lab fixture: the workbench page, checked clean)

SAVE_TIMEOUT_MS = 60_000
PAGE = 10  # items per page of the library's lists (frontend/js/library.js PAGE)


def _classes_csv(tmp_path: Path) -> Path:
    """90 rows, three classes by x1, a categorical colour column."""
    rng = random.Random(7)
    rows = []
    for i in range(90):
        x1, x2 = rng.uniform(0, 3), rng.uniform(-1, 1)
        rows.append(f"{x1:.3f},{x2:.3f},{'red' if i % 2 else 'blue'},{'abc'[int(x1)]}")
    path = tmp_path / "classes.csv"
    path.write_text("x1,x2,colour,label\n" + "\n".join(rows) + "\n")
    return path


def _save(lab: Lab, model_name: str, version: int = 1) -> None:
    from playwright.sync_api import expect

    lab.page.fill("#cloud-model-name", model_name)
    lab.page.get_by_role("button", name="Save to cloud").click()
    expect(lab.page.locator("#cloud-message")).to_have_text(f"Saved as version {version}.", timeout=SAVE_TIMEOUT_MS)


def test_the_library_lists_what_was_saved_and_manages_it(
    lab: Lab, chromium, stack: Stack, new_user, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    user = new_user()
    subscriptions.set_grant(user["uid"], lambda doc, now: entitlements.with_grant(doc, None, now))
    page = lab.page
    lab.sign_in(user)
    library = page.locator("#library")
    expect(library).to_be_visible()
    expect(page.locator("#library-plan")).to_be_hidden()  # PRO: no plan note
    expect(library).to_contain_text("No projects yet.")
    expect(library).to_contain_text("No training runs yet. Train a model and press Save to cloud")

    # Two saves into one project: XOR (no dataset file) and a three-class CSV (the file is saved too).
    lab.load_xor()
    lab.configure(epochs=200)
    assert lab.train()["finalAcc"] == "1"
    page.fill("#cloud-new-project", "Experiments")
    _save(lab, "xor-net")
    page.set_input_files("#data-file", _classes_csv(tmp_path))
    expect(page.locator("#data-summary")).to_contain_text("classes.csv: 90 rows, 4 columns")
    lab.configure(units=8, activation="relu", lr=0.05, epochs=60, batch=16)
    assert lab.train()["state"] == "done"
    expect(page.locator("#cloud-project option:checked")).to_have_text("Experiments")
    _save(lab, "colours")

    # What Firestore holds, to compare the page with.
    uid = user["uid"]
    [project] = docs_where(catalog.PROJECTS, "uid", uid)
    models = {m["name"]: m for m in docs_where(catalog.MODELS, "uid", uid)}
    assert set(models) == {"xor-net", "colours"}  # a new name made a new model, not version 2 of xor-net
    [dataset] = docs_where(catalog.DATASETS, "uid", uid)
    jobs = {j["model_id"]: j for j in docs_where(catalog.JOBS, "uid", uid)}
    assert len(jobs) == 2 and all(j["status"] == "recorded" for j in jobs.values())
    xor_job, csv_job = jobs[models["xor-net"]["id"]], jobs[models["colours"]["id"]]
    csv_metrics = json.loads(csv_job["metrics_json"])
    assert csv_metrics["params"]["labels"] == ["a", "b", "c"]  # the lab saves the class labels with the run

    # Projects: the one project with its counts.
    projects = page.locator("#library-projects > li")
    expect(projects).to_have_count(1)
    expect(projects.first).to_contain_text("Experiments")
    expect(projects.first).to_contain_text("2 models, 1 dataset")
    # Models, each with its ready version 1 and a Load button.
    for name in ("xor-net", "colours"):
        item = page.locator("#library-models > li").filter(has_text=name)
        expect(item.locator("[data-version='1']")).to_have_attribute("data-status", "ready")
        expect(item.locator("[data-version='1']")).to_contain_text("ready")
        expect(item.get_by_role("button", name=f"Load v1 of {name}")).to_be_enabled()
    # Refreshed, the library asks for its models in one list with their versions, not one GET per model.
    model_gets: list[str] = []
    page.on("request", lambda r: model_gets.append(r.url) if r.method == "GET" and "/models" in r.url else None)
    with page.expect_response(lambda r: "versions=true" in r.url):
        page.get_by_role("button", name="Refresh the library").click()
    expect(page.locator("#library-models > li")).to_have_count(2)
    asked = [(urlsplit(url).path, parse_qs(urlsplit(url).query)) for url in model_gets]
    pages = [query for path, query in asked if path.endswith("/models") and query.get("limit") == [str(PAGE)]]
    assert pages and all(q.get("versions") == ["true"] for q in pages), model_gets
    assert not [path for path, _ in asked if re.search(r"/models/[0-9a-f]{32}$", path)], model_gets
    # The CSV dataset: rows and columns as the recorder counted them.
    rows = page.locator("#library-datasets > tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("th")).to_have_text("classes.csv")
    cells = rows.first.locator("td")
    expect(cells.nth(1)).to_have_text(str(dataset["row_count"]))
    expect(cells.nth(2)).to_have_text(str(len(dataset["columns"])))
    assert dataset["row_count"] == 90 and dataset["columns"] == ["x1", "x2", "colour", "label"]
    # Two training runs, each with the final metrics the recorder stored.
    runs = page.locator("#library-jobs > tr")
    expect(runs).to_have_count(2)
    for job in (xor_job, csv_job):
        row = page.locator(f"#library-jobs > tr[data-id='{job['id']}']")
        expect(row).to_have_attribute("data-final", re.compile(r"^\{"))
        assert json.loads(row.get_attribute("data-final")) == json.loads(job["metrics_json"])["final"]
        expect(row.locator("td").nth(3)).to_have_text(str(job["epoch_count"]))
    xor_row = page.locator(f"#library-jobs > tr[data-id='{xor_job['id']}']")
    expect(xor_row).to_contain_text("xor-net v1")
    expect(xor_row.locator("td").nth(0)).to_have_text("not saved")  # the XOR demo has no file
    expect(xor_row.locator("td").nth(2)).to_have_text("100.0 %")
    csv_row = page.locator(f"#library-jobs > tr[data-id='{csv_job['id']}']")
    expect(csv_row.locator("td").nth(0)).to_have_text("classes.csv")
    lab.screenshot("lab-library", locator="#library")

    # Show the CSV run: its curves from metrics.json (uPlot canvases), final metrics, confusion matrix.
    csv_row.get_by_role("button", name="Show").click()
    detail = page.locator("#run-detail")
    expect(detail).to_be_visible()
    expect(detail.get_by_role("heading", name="Run: colours v1")).to_be_focused()
    expect(detail.locator("canvas")).not_to_have_count(0)
    assert detail.locator(".chart").count() == 2  # loss and accuracy
    matrix = detail.locator("#run-confusion")
    assert json.loads(matrix.get_attribute("data-matrix")) == csv_metrics["final"]["confusion_matrix"]
    expect(matrix).to_contain_text("actual a")
    expect(matrix).to_contain_text("predicted c")
    assert json.loads(detail.locator("#run-metrics").get_attribute("data-final")) == csv_metrics["final"]
    expect(detail).to_contain_text(f"{len(csv_metrics['epochs'])} epochs of 60")
    expect(csv_row.get_by_role("button", name="Show")).to_have_attribute("aria-expanded", "true")
    lab.screenshot("lab-library-run", locator="#library")
    detail.get_by_role("button", name="Close the run").click()
    expect(detail).to_be_hidden()
    expect(csv_row.get_by_role("button", name="Show")).to_be_focused()

    # Open the saved CSV in the workbench: the same columns, roles and task in the data panel.
    lab.load_xor()
    expect(page.locator("#data-summary")).to_contain_text("XOR")
    rows.first.get_by_role("button", name="Open in workbench: classes.csv").click()
    expect(page.locator("#library-datasets-message")).to_contain_text("Opened classes.csv in the workbench")
    expect(page.locator("#data-summary")).to_contain_text("classes.csv: 90 rows, 4 columns (3 features), target label.")
    columns = page.locator("#data-columns tbody th")
    expect(columns).to_have_text(dataset["columns"])
    expect(page.get_by_label("Role of label")).to_have_value("target")
    expect(page.get_by_label("Type of colour")).to_have_value("categorical")
    expect(page.locator("#data-task")).to_have_value("multiclass")

    # Load a ready version from the library: the workbench's prediction form comes back.
    page.locator("#library-models > li").filter(has_text="xor-net").get_by_role("button", name="Load v1").click()
    expect(page.locator("#library-models-message")).to_contain_text("Loaded xor-net version 1 into the workbench")
    assert lab.predict(0, 1)[0] == "1"

    # Rename the project: the list, the cloud panel's choice and Firestore say the new name.
    page.get_by_role("button", name="Rename Experiments").click()
    field = page.get_by_label("New name for Experiments")
    expect(field).to_be_focused()
    field.fill("Renamed lab")
    page.get_by_role("button", name="Save name").click()
    expect(projects.first).to_contain_text("Renamed lab")
    expect(page.locator("#library-projects-message")).to_have_text("Renamed Experiments to Renamed lab.")
    expect(page.locator("#cloud-project option:checked")).to_have_text("Renamed lab")
    expect(page.locator("#library-project option").nth(1)).to_have_text("Renamed lab")
    assert clients.firestore().collection(catalog.PROJECTS).document(project["id"]).get().get("name") == "Renamed lab"

    # Delete a run: dismissing the confirmation keeps it; accepting removes it from the list and Firestore.
    delete = xor_row.get_by_role("button", name="Delete")
    page.once("dialog", lambda d: d.dismiss())
    delete.click()
    expect(runs).to_have_count(2)
    page.once("dialog", lambda d: d.accept())
    delete.click()
    expect(runs).to_have_count(1)
    expect(page.locator("#library-jobs-message")).to_contain_text("Deleted training run of version 1 (xor-net v1)")
    assert [j["id"] for j in docs_where(catalog.JOBS, "uid", uid)] == [csv_job["id"]]
    assert not clients.firestore().collection(catalog.JOBS).document(xor_job["id"]).get().exists

    # The same library on a phone: nothing scrolls sideways, the run opens under its table.
    with lab_support.checked(Lab(chromium, stack, viewport=lab_support.PHONE)) as phone:
        phone.sign_in(user)
        expect(phone.page.locator("#library-jobs > tr")).to_have_count(1)
        phone.page.locator("#library").scroll_into_view_if_needed()
        phone.no_sideways_scroll()
        phone.screenshot("lab-library-phone", locator="#library")
        phone.page.locator("#library-jobs > tr").get_by_role("button", name="Show").click()
        expect(phone.page.locator("#run-detail canvas")).not_to_have_count(0)
        phone.no_sideways_scroll()
        phone.screenshot("lab-library-run-phone", locator="#library")

    # Delete the project (after a confirmation): everything in it leaves the page and Firestore.
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete Renamed lab").click()
    expect(page.locator("#library-projects-message")).to_have_text("Deleted Renamed lab and everything in it.")
    for key in ("projects", "models", "datasets", "jobs"):
        expect(page.locator(f"#library-{key} > *")).to_have_count(0)
    expect(library).to_contain_text("No saved datasets yet.")
    expect(page.locator("#cloud-project option")).to_have_count(1)  # only "New project…" is left to choose
    for collection in (catalog.PROJECTS, catalog.MODELS, catalog.DATASETS, catalog.JOBS):
        assert not docs_where(collection, "uid", uid), collection


def test_lists_page_with_show_more(lab: Lab, chromium, stack: Stack, member, new_user) -> None:
    from playwright.sync_api import expect

    api = member()
    made = []
    for i in range(12):
        r = api.request("POST", "/projects", json_body={"name": f"project {i:02d}"})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    model = api.request("POST", "/models", json_body={"project_id": made[0], "name": "m", "config_json": {}}).json()
    for i in range(11):
        r = api.request(
            "POST", "/jobs", json_body={"project_id": made[0], "model_id": model["id"], "name": f"run {i:02d}"}
        )
        assert r.status_code == 201, r.text
    lab.sign_in({"email": api.email, "password": PASSWORD})
    page = lab.page
    projects = page.locator("#library-projects > li")
    expect(projects).to_have_count(10)
    expect(projects.first).to_contain_text("project 11")  # newest first
    more = page.get_by_role("button", name="Show more projects")
    more.click()
    expect(projects).to_have_count(12)
    expect(more).to_be_hidden()
    assert sorted(projects.evaluate_all("items => items.map((li) => li.dataset.id)")) == sorted(made)
    expect(projects.nth(10)).to_be_focused()  # the first item the page added
    # Runs page the same way; without a recorded metrics.json they say so and cannot be shown.
    runs = page.locator("#library-jobs > tr")
    expect(runs).to_have_count(10)
    page.get_by_role("button", name="Show more training runs").click()
    expect(runs).to_have_count(11)
    expect(runs.first).to_contain_text("not recorded yet")
    expect(runs.first.get_by_role("button", name="Show")).to_be_disabled()
    # A run deleted elsewhere meanwhile: the page says what the API said, in an alert.
    gone = runs.first.get_attribute("data-id")
    assert api.request("DELETE", f"/jobs/{gone}").status_code == 204
    lab.allowed.append((404, f"/jobs/{gone}"))
    page.once("dialog", lambda d: d.accept())
    runs.first.get_by_role("button", name="Delete").click()
    problem = page.locator("#library-jobs-message")
    expect(problem).to_contain_text("No training job of yours has this id; it may have been deleted. Refresh the list.")
    expect(problem).to_have_attribute("role", "alert")
    page.get_by_role("button", name="Refresh the library").click()
    expect(runs).to_have_count(10)
    # Only one project: its runs and models, not the others'.
    page.select_option("#library-project", label="project 00")
    expect(page.locator("#library-models > li")).to_have_count(1)
    page.select_option("#library-project", label="project 05")
    expect(page.locator("#library-models > li")).to_have_count(0)
    expect(runs).to_have_count(0)
    expect(page.locator("#library")).to_contain_text(
        "Nothing in project 05 yet. Train a model and press Save to cloud."
    )

    # Another person's library, meanwhile, is empty.
    with lab_support.checked(Lab(chromium, stack)) as other:
        other.sign_in(new_user())
        expect(other.page.locator("#library")).to_contain_text("No projects yet.")
        expect(other.page.locator("#library")).to_contain_text("No training runs yet.")
        for key in ("projects", "models", "datasets", "jobs"):
            expect(other.page.locator(f"#library-{key} > *")).to_have_count(0)
        expect(other.page.locator("#library-project option")).to_have_count(1)  # "All projects" only


def test_a_free_user_sees_their_lists_and_a_pending_version(lab: Lab, member) -> None:
    from playwright.sync_api import expect

    api = member()  # no PRO: the catalog answers, only uploads are refused
    project = api.request("POST", "/projects", json_body={"name": "Old work"}).json()
    model = api.request(
        "POST", "/models", json_body={"project_id": project["id"], "name": "draft", "config_json": {}}
    ).json()
    assert api.request("POST", f"/models/{model['id']}/versions").json()["status"] == "pending"
    lab.sign_in({"email": api.email, "password": PASSWORD})
    page = lab.page
    expect(page.locator("#library-plan")).to_be_visible()
    expect(page.locator("#library-plan")).to_contain_text("Saving new work needs PRO or a promo trial")
    item = page.locator("#library-models > li").filter(has_text="draft")
    version = item.locator("[data-version='1']")
    expect(version).to_have_attribute("data-status", "pending")
    expect(version).to_contain_text("pending")
    expect(version.get_by_role("button")).to_have_count(0)  # nothing to load yet
    expect(page.locator("#library-projects > li")).to_contain_text("Old work")
    # Deleting still works on the free plan.
    page.once("dialog", lambda d: d.accept())
    item.get_by_role("button", name="Delete model draft").click()
    expect(page.locator("#library-models > li")).to_have_count(0)
    expect(page.locator("#library")).to_contain_text("No saved models yet. Train a model and press Save to cloud.")
    assert not docs_where(catalog.MODELS, "uid", api.uid)
