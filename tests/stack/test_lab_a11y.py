"""The whole lab page as a screen reader and a phone see it, signed out and signed in with a trained
model and the library open: every control Chromium's accessibility tree exposes has a name, headings
do not skip levels, live messages are announced, nothing sticks out sideways at 390 px, and the page
can be signed into with the keyboard alone. Screenshots of each screen are saved."""

from __future__ import annotations

import re

from mllab.billing import entitlements, subscriptions

from . import lab_support
from .workbench_support import Lab, lab  # noqa: F401  (the lab fixture: the workbench page, checked clean)

NAMED_ROLES = {
    "button",
    "link",
    "textbox",
    "combobox",
    "checkbox",
    "radio",
    "spinbutton",
    "tab",
    "slider",
    "searchbox",
    "listbox",
    "menuitem",
    "switch",
}


def unnamed_controls(lab: Lab) -> list[str]:
    """Controls in Chromium's accessibility tree (what a screen reader gets) without an accessible name."""
    cdp = lab.context.new_cdp_session(lab.page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    missing = []
    for node in nodes:
        role = (node.get("role") or {}).get("value")
        if node.get("ignored") or role not in NAMED_ROLES:
            continue
        if not str((node.get("name") or {}).get("value") or "").strip():
            missing.append(f"{role} (backend node {node.get('backendDOMNodeId')})")
    return missing


def heading_levels(lab: Lab) -> list[tuple[int, str]]:
    return lab.page.evaluate("""() => [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')]
        .filter((h) => h.offsetParent !== null)
        .map((h) => [Number(h.tagName[1]), h.textContent.trim()])""")


def check_screen(lab: Lab, name: str) -> None:
    assert unnamed_controls(lab) == [], name
    levels = heading_levels(lab)
    assert [lvl for lvl, _ in levels].count(1) == 1, levels
    for (before, _), (after, text) in zip(levels, levels[1:], strict=False):
        assert after <= before + 1, f"{name}: heading '{text}' (h{after}) skips a level after h{before}"
    # Every message region is announced: a status or an alert, or an aria-live region.
    silent = lab.page.evaluate("""() => [...document.querySelectorAll('[id$="-message"]')]
        .filter((e) => !e.closest('[aria-live]') && !['status', 'alert'].includes(e.getAttribute('role')))
        .map((e) => e.id)""")
    assert silent == [], f"{name}: messages a screen reader would not hear: {silent}"
    lab.screenshot(f"{name}-desktop")
    lab.resize(lab_support.PHONE)  # charts and tables follow the width
    lab.no_sideways_scroll(name)
    lab.screenshot(f"{name}-phone")
    lab.page.set_viewport_size({"width": 1000, "height": 900})


def test_signed_out_page_is_named_ordered_and_fits_a_phone(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    lab.open(wait_until="networkidle")
    lab.page.wait_for_selector("#signed-out:not([hidden])")
    check_screen(lab, "a11y-signed-out")
    # The check sees what a screen reader would miss: an icon-only button without a label.
    lab.page.evaluate(
        "document.querySelector('main').append(Object.assign(document.createElement('button'), {id: 'probe'}))"
    )
    assert len(unnamed_controls(lab)) == 1
    lab.page.evaluate("document.getElementById('probe').remove()")

    # The keyboard alone: Tab reaches Google, then the tabs, then the form, and Enter signs in.
    user = new_user()
    lab.page.locator("body").focus()
    reached = []
    for _ in range(12):
        lab.page.keyboard.press("Tab")
        reached.append(lab.page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
        if reached[-1] == "email":
            break
    # Google's button, then the selected tab (the others are reached with the arrow keys), then the form.
    assert reached[-3:] == ["google", "tab-signin", "email"], reached
    lab.page.keyboard.type(user["email"])
    lab.page.keyboard.press("Tab")
    lab.page.keyboard.type(user["password"])
    lab.page.keyboard.press("Enter")
    expect(lab.page.locator("#signed-in")).to_be_visible()


def test_signed_in_with_a_model_and_the_library_is_named_ordered_and_fits_a_phone(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    subscriptions.set_grant(user["uid"], lambda doc, now: entitlements.with_grant(doc, None, now))
    lab.sign_in(user)
    lab.load_xor()
    lab.configure(epochs=60)
    assert lab.train()["state"] == "done"
    lab.page.get_by_role("button", name="Save to cloud").click()
    expect(lab.page.locator("#cloud-message")).to_contain_text("Saved as version 1", timeout=60_000)
    expect(lab.page.locator("#library")).to_be_visible()
    # Deployed, with a key made: the deployments panel's card and the shown-once key are on the screen too.
    lab.page.get_by_role("button", name=re.compile(r"^Deploy v1 of ")).click()
    expect(lab.page.locator("#deployments-list > li .dep-snippets pre")).to_have_count(3)
    lab.page.fill("#key-name", "a11y")
    lab.page.get_by_role("button", name="Create key").click()
    expect(lab.page.locator("#new-key")).to_be_visible()
    check_screen(lab, "a11y-signed-in")
