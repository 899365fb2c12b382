"""Save to the cloud from the lab and load it back, in Chromium against the local stack: signed PUTs
straight to the bucket, the event pipeline marking the version ready, the library listing it, signed
GETs to reload, and the same predictions as before. A free user is told why the save is refused, and
nothing is created for them."""

from __future__ import annotations

from mllab.billing import entitlements, subscriptions
from mllab.files import catalog
from mllab_dev.stack import Stack

from .conftest import docs_where
from .workbench_support import Lab, lab  # noqa: F401  (the lab fixture: the workbench page, checked clean)


def _trained(lab: Lab, user: dict) -> list[float]:
    lab.sign_in(user)
    lab.load_xor()
    lab.configure(epochs=200)
    data = lab.train()
    assert data.get("finalAcc") == "1", data
    return lab.predict(0, 1)[1]


def test_save_to_the_cloud_then_reload_predicts_the_same(lab: Lab, stack: Stack, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    subscriptions.set_grant(user["uid"], lambda doc, now: entitlements.with_grant(doc, None, now))
    before = _trained(lab, user)
    page = lab.page
    page.fill("#cloud-new-project", "XOR experiments")
    page.fill("#cloud-model-name", "xor-net")
    page.get_by_role("button", name="Save to cloud").click()
    expect(page.locator("#cloud-message")).to_have_text("Saved as version 1.", timeout=60_000)
    expect(page.locator("#cloud-steps li")).to_have_count(4)  # version, weights, model.json, training run
    # What the backend holds: a ready version with both files, and the run's metrics recorded.
    models = docs_where(catalog.MODELS, "uid", user["uid"])
    assert [m["name"] for m in models] == ["xor-net"] and models[0]["latest_version"] == 1
    jobs = docs_where(catalog.JOBS, "uid", user["uid"])
    assert len(jobs) == 1 and jobs[0]["model_id"] == models[0]["id"]
    # The library lists the version as ready.
    version = page.locator("#library-models > li").filter(has_text="xor-net").locator("[data-version='1']")
    expect(version).to_have_attribute("data-status", "ready")
    expect(version).to_contain_text("ready")
    lab.screenshot("lab-cloud-saved")
    # Reload version 1 through signed GET URLs: the same predictions.
    page.get_by_role("button", name="Load v1").click()
    expect(page.locator("#library-models-message")).to_contain_text("Loaded xor-net version 1")
    after = lab.predict(0, 1)[1]
    assert all(abs(a - b) < 1e-6 for a, b in zip(before, after, strict=True)), (before, after)
    # A second save adds version 2 to the same model, and the library lists both.
    page.get_by_role("button", name="Save to cloud").click()
    expect(page.locator("#cloud-message")).to_have_text("Saved as version 2.", timeout=60_000)
    versions = page.locator("#library-models > li").filter(has_text="xor-net").locator("[data-version]")
    expect(versions).to_have_count(2)
    expect(page.locator("#library-models > li")).to_have_count(1)


def test_a_free_users_save_says_what_plan_it_needs(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    _trained(lab, user)
    lab.page.fill("#cloud-new-project", "Not yet")
    lab.page.get_by_role("button", name="Save to cloud").click()
    expect(lab.page.locator("#cloud-message")).to_contain_text("needs PRO or a promo trial")
    expect(lab.page.locator("#cloud-message")).to_have_attribute("role", "alert")
    # Refused before anything was made: no empty project, no version left pending.
    for collection in (catalog.PROJECTS, catalog.MODELS):
        assert not docs_where(collection, "uid", user["uid"]), collection
    expect(lab.page.locator("#library-plan")).to_contain_text("Saving new work needs PRO or a promo trial")
