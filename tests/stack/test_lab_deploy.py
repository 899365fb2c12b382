"""The lab's deployments panel in Chromium against the local stack: a PRO user deploys a saved version from
the library; the panel shows its predict URL and snippets filled with a row of the dataset in the
workbench (or of the dataset the version was trained on); a key made in the panel (shown once) runs the
copied curl and Python snippets against the stack's predict function; switching the version answers with
the new one; revoking the key makes predict answer 401; the Public switch gives a share link that opens
at /m/<id>; Delete removes it. A free user sees why deploying needs PRO and how to get it, with no
Deploy buttons; the panel lists only the user's own deployments; API problems are shown in the panel; a
phone does not scroll sideways."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from mllab.serving import apikeys, deployments

from . import lab_support
from .serving_support import ServingLab, churn_csv, golden_files, not_pro, pro, saved_version

CLIPBOARD = ["clipboard-read", "clipboard-write"]


@pytest.fixture
def lab(chromium, stack):
    with lab_support.checked(ServingLab(chromium, stack, permissions=CLIPBOARD)) as made:
        yield made


def features() -> list[str]:
    model_json, _, _ = golden_files()
    return [f["name"] for f in json.loads(model_json)["userDefinedMetadata"]["preprocessor"]["features"]]


def two_versions(uid: str) -> dict:
    """A model with two ready versions (the golden churn model, as the lab saved it)."""
    model_json, weights, _ = golden_files()
    model, first = saved_version(uid, model_json, weights)
    _, second = saved_version(uid, model_json, weights, model)
    assert (first, second) == (1, 2)
    return model


def copied(lab: lab_support.Lab, button: str) -> str:
    lab.page.get_by_role("button", name=button).first.click()
    return lab.page.evaluate("navigator.clipboard.readText()")


def run_curl(snippet: str, key: str) -> dict:
    out = subprocess.run(
        ["bash", "-c", snippet], capture_output=True, text=True, timeout=60, env={**os.environ, "MLLAB_API_KEY": key}
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def run_python(snippet: str, key: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", snippet],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MLLAB_API_KEY": key},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_deploy_call_switch_share_revoke_and_delete(lab: ServingLab, new_user, tmp_path: Path) -> None:
    page = lab.page
    user = new_user()
    uid = user["uid"]
    pro(uid)
    two_versions(uid)
    # Someone else's deployment: never listed in this user's panel.
    other = new_user()["uid"]
    pro(other)
    theirs = deployments.create(other, two_versions(other)["id"], 1)["id"]

    lab.sign_in(user)

    panel = page.locator("#deployments")
    expect(panel).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Deployments")).to_have_attribute(
        "href", "#deployments-title"
    )
    expect(page.locator("#deploy-empty")).to_contain_text("Nothing deployed yet")
    expect(page.locator("#deploy-plan")).to_be_hidden()
    page.get_by_role("button", name="Deploy v1 of churn").click()
    expect(page.locator("#deployments-list > li")).to_have_count(1)
    [mine] = deployments.list_deployments(uid)
    dep_id = mine["id"]
    card = page.locator(f"#deployments-list > li[data-id='{dep_id}']")
    expect(card).to_contain_text("churn")
    expect(page.locator("#deploy-message")).to_contain_text("Deployed churn v1")
    expect(page.locator(f"#dep-{dep_id}-url")).to_have_value(f"{lab.stack.gateway_url}/predict/{dep_id}")
    assert theirs not in panel.inner_html()
    assert page.locator("#deployments-list > li").evaluate_all("els => els.map((e) => e.dataset.id)") == [dep_id]

    # No dataset in the workbench and none saved with a run (these versions were stored directly): each
    # feature is null (the server imputes it) and the panel says how to fill the snippets; with the model's
    # dataset open, they hold its first row as the model reads it.
    snippets = card.locator(".dep-snippets")
    expect(snippets).to_contain_text("Open the model's dataset in the workbench")
    assert json.loads(snippets.get_attribute("data-instance")) == dict.fromkeys(features())
    csv = tmp_path / "churn.csv"
    csv.write_text(churn_csv())
    lab.open_csv(csv)
    first_row = lab.dataset_rows()[0]
    expect(snippets).to_contain_text("Filled with the first row of the dataset in the workbench")
    instance = json.loads(snippets.get_attribute("data-instance"))
    assert instance == {name: first_row[name] for name in features()}
    assert any(v is not None for v in instance.values())
    expect(page.locator(f"#dep-{dep_id}-curl")).to_contain_text(json.dumps(instance["monthly"]))

    # A key, shown once: the panel's copy, then only its prefix in the list.
    page.fill("#key-name", "laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_contain_text("you will not see it again")
    key = page.locator("#new-key-value").input_value()
    assert re.fullmatch(r"mlk_[A-Za-z0-9]+_[A-Za-z0-9_-]+", key), key
    assert copied(lab, "Copy the api key") == key
    expect(page.locator("#keys-message")).to_have_text("API key copied.")
    row = page.locator("#keys-list > tr").filter(has_text="laptop")
    expect(row).to_contain_text("_".join(key.split("_")[:2]))  # its prefix, mlk_<id>
    expect(row).to_contain_text("predict")
    page.get_by_role("button", name="Hide the new key").click()
    expect(page.locator("#new-key")).to_be_hidden()
    assert key not in panel.inner_html()

    # The copied snippets, run as a person would, get predictions from the stack.
    curl = copied(lab, "Copy the curl snippet")
    answer = run_curl(curl, key)
    assert answer["deployment_id"] == dep_id and answer["version"] == 1
    assert answer["predictions"][0]["label"] in ("yes", "no")
    printed = run_python(copied(lab, "Copy the Python (httpx) snippet"), key)
    assert "'label'" in printed and "'probabilities'" in printed
    # Refreshed, the list shows when the key was last used.
    page.get_by_role("button", name="Refresh the deployments and keys").click()
    expect(row.locator("td[data-label='Last used'] time")).to_have_count(1)

    # Switching the version: the next call answers with version 2.
    page.select_option(f"#dep-{dep_id}-version", "2")
    expect(card).to_have_attribute("data-version", "2")
    expect(page.locator("#deploy-message")).to_contain_text("now answers with version 2")
    assert run_curl(curl, key)["version"] == 2

    # A description and the Public switch: the share link opens the model at /m/<id>.
    page.fill(f"#dep-{dep_id}-description", "Will this customer churn?")
    page.get_by_role("button", name="Save description").click()
    expect(page.locator("#deploy-message")).to_have_text("Description saved.")
    page.get_by_role("switch", name="Public share page").check()
    share = page.locator(f"#dep-{dep_id}-share")
    expect(share).to_have_value(f"{lab.stack.gateway_url}/m/{dep_id}")
    expect(page.locator(f"#dep-{dep_id}-embed")).to_contain_text(f'<iframe src="{lab.stack.gateway_url}/m/{dep_id}"')
    lab.screenshot("deploy-panel", locator="#deployments")
    assert not lab.low_contrast(), lab.low_contrast()
    visitor = lab.context.new_page()
    visitor.goto(share.input_value())
    expect(visitor.locator("#share-title")).to_have_text("churn")
    expect(visitor.locator("#share-description")).to_have_text("Will this customer churn?")
    # Private again, the same link no longer opens it.
    page.get_by_role("switch", name="Public share page").uncheck()
    expect(share).to_have_count(0)
    expect(card).to_contain_text("Private")
    visitor.goto(f"{lab.stack.gateway_url}/m/{dep_id}")
    expect(visitor.locator("#share-title")).to_have_text("This model is not shared")
    visitor.close()
    page.get_by_role("switch", name="Public share page").check()
    expect(share).to_be_visible()

    # The phone: nothing sticks out sideways.
    lab.resize(lab_support.PHONE)
    lab.no_sideways_scroll("the deployments panel on a phone")
    lab.screenshot("deploy-panel-phone", locator="#deployments")
    lab.resize({"width": 1000, "height": 900})

    # Revoked, the key is refused at once.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke the key laptop").click()
    expect(page.locator("#keys-list > tr")).to_have_count(0)
    expect(page.locator("#keys-message")).to_contain_text("Revoked laptop")
    refused = run_curl(curl, key)
    assert refused["status"] == 401 and "revoked" in refused["detail"]
    assert apikeys.list_keys(uid) == []

    # Deleted (after confirming), the deployment is gone from the panel and the API.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete the deployment of churn").click()
    expect(page.locator("#deployments-list > li")).to_have_count(0)
    assert deployments.list_deployments(uid) == []
    assert [d["id"] for d in deployments.list_deployments(other)] == [theirs]


def test_the_snippets_take_a_row_of_the_dataset_the_version_was_trained_on(
    lab: ServingLab, new_user, tmp_path: Path
) -> None:
    user = new_user()
    pro(user["uid"])
    lab.sign_in(user)
    csv = tmp_path / "churn.csv"
    csv.write_text(churn_csv())
    lab.train_csv(csv, [(4, "relu")], epochs=3)
    first_row = lab.dataset_rows()[0]
    lab.page.fill("#cloud-model-name", "churn")
    lab.page.get_by_role("button", name="Save to cloud").click()
    expect(lab.page.locator("#cloud-message")).to_have_text("Saved as version 1.", timeout=60_000)
    lab.page.get_by_role("button", name="Start over").click()  # the workbench holds no dataset now
    lab.page.get_by_role("button", name="Deploy v1 of churn").click()
    snippets = lab.page.locator("#deployments-list > li .dep-snippets")
    expect(snippets).to_contain_text("Filled with the first row of the dataset this version was trained on")
    assert json.loads(snippets.get_attribute("data-instance")) == first_row


def test_api_problems_are_shown_in_the_panel(lab: ServingLab, new_user) -> None:
    user = new_user()
    pro(user["uid"])
    two_versions(user["uid"])
    lab.allowed += [(422, "/api-keys")]
    lab.sign_in(user)
    expect(lab.page.locator("#key-form")).to_be_visible()
    lab.page.fill("#key-name", "   ")  # the browser's own check lets blanks through; the API names the field
    lab.page.get_by_role("button", name="Create key").click()
    message = lab.page.locator("#keys-message")
    expect(message).to_have_class(re.compile(r"\bproblem\b"))
    expect(message).to_contain_text("Name")
    expect(lab.page.locator("#new-key")).to_be_hidden()
    assert apikeys.list_keys(user["uid"]) == []


def test_a_key_for_one_deployment_that_expires(lab: ServingLab, new_user) -> None:
    user = new_user()
    uid = user["uid"]
    pro(uid)
    model = two_versions(uid)
    only = deployments.create(uid, model["id"], 2)["id"]
    deployments.create(uid, model["id"], 1)
    lab.sign_in(user)
    expect(lab.page.locator("#deployments-list > li")).to_have_count(2)
    lab.page.fill("#key-name", "nightly job")
    lab.page.select_option("#key-deployment", label="Only churn v2")
    lab.page.select_option("#key-expiry", label="In 30 days")
    lab.page.get_by_role("button", name="Create key").click()
    expect(lab.page.locator("#new-key")).to_contain_text("you will not see it again")
    [stored] = apikeys.list_keys(uid)
    assert stored["name"] == "nightly job" and stored["deployment_ids"] == [only]
    row = lab.page.locator(f"#keys-list > tr[data-id='{stored['id']}']")
    expect(row.locator("td[data-label='Works for']")).to_have_text("churn v2")
    expires = datetime.fromisoformat(stored["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)
    expect(row.locator("td[data-label='Expires'] time")).to_have_attribute("datetime", stored["expires_at"])


def test_losing_pro_shows_the_deployments_paused(lab: ServingLab, new_user) -> None:
    user = new_user()
    uid = user["uid"]
    pro(uid)
    dep_id = deployments.create(uid, two_versions(uid)["id"], 1)["id"]
    apikeys.create(uid, "old key", ["predict"])
    not_pro(uid)
    lab.sign_in(user)
    card = lab.page.locator(f"#deployments-list > li[data-id='{dep_id}']")
    expect(card).to_contain_text("Paused")
    expect(lab.page.locator("#deploy-paused")).to_contain_text("Nothing was deleted")
    expect(lab.page.locator("#key-form")).to_be_hidden()
    # Its old key stays listed, to be revoked.
    expect(lab.page.locator("#keys-list > tr").filter(has_text="old key")).to_have_count(1)
    lab.page.once("dialog", lambda dialog: dialog.accept())
    lab.page.get_by_role("button", name="Revoke the key old key").click()
    expect(lab.page.locator("#deploy-message")).to_contain_text("Revoked old key")
    expect(lab.page.locator("#keys-title")).to_be_hidden()
    assert apikeys.list_keys(uid) == []


def test_a_free_user_sees_why_deploying_needs_pro(lab: ServingLab, new_user) -> None:
    user = new_user()
    pro(user["uid"])
    two_versions(user["uid"])  # saved while PRO
    not_pro(user["uid"])
    lab.sign_in(user)
    plan = lab.page.locator("#deploy-plan")
    expect(plan).to_be_visible()
    expect(plan).to_contain_text("need PRO")
    expect(plan.get_by_role("link", name="Go PRO to deploy")).to_have_attribute("href", "#billing")
    expect(lab.page.locator("#deploy-paused")).to_be_hidden()  # nothing deployed, nothing paused
    expect(lab.page.locator("#library-models [data-version='1']")).to_contain_text("ready")
    expect(lab.page.get_by_role("button", name=re.compile(r"^Deploy v\d"))).to_have_count(0)
    expect(lab.page.locator("#key-form")).to_be_hidden()
    expect(lab.page.locator("#keys-title")).to_be_hidden()  # no keys to list, none to make
    lab.resize(lab_support.PHONE)
    lab.no_sideways_scroll("the PRO prompt on a phone")
    lab.screenshot("deploy-free-phone", locator="#deployments")
