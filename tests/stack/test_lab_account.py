"""The lab's account section in a real browser (Debian's Chromium through Playwright) against the local
stack: register, verify from the mailed link, resend, forgot and reset, sign in with a password or
through the OIDC stand-in ("Continue with Google"), the silent refresh on load and before expiry,
change the password, the devices list and revoking a device, sign-out of this device or everywhere,
the data export and account deletion. Mails are the files the local sender writes; sessions and users
are checked in Firestore. Every test fails on any console error it did not expect."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from mllab.identity import auth, users
from mllab_dev.stack import Stack

from . import lab_support
from .billing_support import mails_to, wait
from .conftest import PASSWORD, docs_where

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
NEW_PASSWORD = "a brand new passphrase 42"
ENDED = "Your session has ended. Sign in again."
STAND_IN_STYLESHEET = "https://cdn.jsdelivr.net/npm/@picocss/"  # oidc-provider-mock's page links it


class Lab(lab_support.Lab):
    """The lab page's account section; `responses` records (status, path) of every API answer."""

    def __init__(self, chromium, stack: Stack, **kw) -> None:
        super().__init__(chromium, stack, accept_downloads=True, **kw)
        self.oidc_url = f"http://127.0.0.1:{stack.ports.oidc}"
        self.responses: list[tuple[int, str]] = []
        self.page.on("response", lambda r: self.responses.append((r.status, r.url.removeprefix(stack.gateway_url))))

    def _console(self, msg) -> None:
        # The OIDC stand-in's own page (its missing favicon, its stylesheet from a CDN this machine
        # cannot reach) is not the lab's: the lab loads nothing from either origin.
        url = (msg.location or {}).get("url", "")
        if url.startswith((self.oidc_url, STAND_IN_STYLESHEET)):
            return
        super()._console(msg)

    @property
    def auth_message(self):
        return self.page.locator("#auth-message")

    @property
    def sessions(self):
        return self.page.locator("#sessions > li")

    def signed_out(self) -> None:
        self.page.wait_for_selector("#signed-out:not([hidden])")

    def signed_in(self) -> None:
        self.page.wait_for_selector("#signed-in:not([hidden])")

    def log_in(self, email: str, password: str) -> None:
        """Fills and sends the sign-in form of a page already showing it."""
        self.page.get_by_role("tab", name="Sign in").click()
        self.page.fill("#email", email)
        self.page.fill("#password", password)
        self.page.click("#login-form button[type=submit]")

    def open_account(self, devices: int | None = None) -> None:
        from playwright.sync_api import expect

        self.page.get_by_text("Devices, password and your data").click()
        if devices is not None:
            expect(self.sessions).to_have_count(devices)

    def fresh_load(self, url: str) -> None:
        """Opens `url` as a new document (a link from a mail opened in a new tab)."""
        self.page.goto("about:blank")
        self.page.goto(url)
        self.page.wait_for_selector("#account > :not([hidden])")

    def reload_to_ended(self) -> None:
        """Reloads a device whose session was ended elsewhere: its silent refresh is refused (401,
        expected) and the sign-in screen says why."""
        from playwright.sync_api import expect

        refused = self.responses.count((401, "/auth/refresh"))
        self.allowed.append((401, "/auth/refresh"))
        self.page.reload()
        self.signed_out()
        expect(self.auth_message).to_have_text(ENDED)
        assert self.responses.count((401, "/auth/refresh")) > refused  # refused by the server, not assumed


@pytest.fixture
def labs(chromium, stack: Stack) -> Iterator:
    """labs(**context) -> a new Lab (a separate browser context: another device). All are closed and
    checked for console errors at the end."""
    made: list[Lab] = []

    def make(**kw: Any) -> Lab:
        lab = Lab(chromium, stack, **kw)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.close()
    for lab in made:
        lab.check_clean()


@pytest.fixture
def lab(labs) -> Lab:
    return labs()


def two_devices(labs, user: dict, **phone: Any) -> tuple[Lab, Lab]:
    """This desktop and an iPhone (its user agent; `phone` adds to its context), both signed in as `user`."""
    here, there = labs(), labs(user_agent=IPHONE, **phone)
    here.sign_in(user)
    there.sign_in(user)
    return here, there


def link_in(message: dict, fragment: str) -> str:
    m = re.search(r"https?://\S+/#" + re.escape(fragment) + r"(=[A-Za-z0-9_-]+)?", message["body"])
    assert m, message["body"]
    return m.group(0)


def sessions_of(uid: str) -> list[dict[str, Any]]:
    return docs_where("sessions", "uid", uid)


def live_sessions(uid: str) -> list[dict[str, Any]]:
    return [s for s in sessions_of(uid) if not s.get("revoked_at")]


# --- signed out -------------------------------------------------------------------------------------


def test_a_signed_out_load_is_quiet_and_the_sign_in_screen_works_by_keyboard(labs) -> None:
    from playwright.sync_api import expect

    for name, viewport in (("desktop", None), ("phone", lab_support.PHONE)):
        lab = labs(viewport=viewport)
        lab.open()
        lab.signed_out()
        # The silent refresh found no cookie: 204, the sign-in screen, no console error (the fixture).
        assert (204, "/auth/refresh") in lab.responses
        assert not [r for r in lab.responses if r[1].startswith("/me")]
        expect(lab.page.locator("#google")).to_have_attribute("href", "/auth/google/login?return_to=%2F")
        expect(lab.page.locator("#login-form")).to_be_visible()
        expect(lab.page.locator("#register-form")).to_be_hidden()
        lab.no_sideways_scroll()
        lab.screenshot(f"account-signin-{name}")

        # Tabs: arrow keys move between Sign in, Create account and Forgot password.
        lab.page.get_by_role("tab", name="Sign in").focus()
        lab.page.keyboard.press("ArrowRight")
        register = lab.page.get_by_role("tab", name="Create account")
        expect(register).to_be_focused()
        expect(register).to_have_attribute("aria-selected", "true")
        expect(lab.page.get_by_role("tabpanel")).to_have_attribute("id", "register-form")
        expect(lab.page.locator("#login-form")).to_be_hidden()
        lab.no_sideways_scroll()
        lab.screenshot(f"account-register-{name}")
        lab.page.keyboard.press("End")
        expect(lab.page.get_by_role("tab", name="Forgot password")).to_be_focused()
        expect(lab.page.locator("#forgot-form")).to_be_visible()
        lab.page.keyboard.press("ArrowRight")  # wraps around
        expect(lab.page.get_by_role("tab", name="Sign in")).to_have_attribute("aria-selected", "true")


def test_register_then_verify_from_the_mail_then_sign_in(lab: Lab, unique: str) -> None:
    from playwright.sync_api import expect

    email = f"new-{unique}@example.com"
    lab.open()
    lab.page.get_by_role("tab", name="Create account").click()
    lab.page.locator("#register-email").fill(email)
    lab.page.get_by_label("Name (optional)").fill("Ada")
    lab.page.locator("#register-password").fill(PASSWORD)
    lab.page.click("#register-form button[type=submit]")
    expect(lab.auth_message).to_have_text(
        f"Check your inbox: we sent a link to {email}. Open it to confirm your address, then sign in."
    )
    expect(lab.page.locator("#register-password")).to_have_value("")
    user = users.find_by_email(email)
    assert user and user["name"] == "Ada" and not user["email_verified"]
    (mail,) = mails_to(email, "verify_email")
    link = link_in(mail, "verify-email")

    lab.fresh_load(link)
    expect(lab.auth_message).to_have_text("Your email is confirmed. You can sign in now.")
    assert lab.page.url == lab.stack.gateway_url + "/"  # the token left the address bar
    expect(lab.page.locator("#email")).to_be_focused()
    assert users.get(user["uid"])["email_verified"] is True

    # The same link a second time: the API's words, and a way to get a new one.
    lab.allowed.append((400, "/auth/verify-email"))
    lab.fresh_load(link)
    expect(lab.auth_message).to_contain_text("This link is invalid, already used or expired.")
    expect(lab.page.locator("#auth-message")).to_have_class(re.compile(r"\bproblem\b"))
    expect(lab.page.get_by_role("button", name="Send the link again")).to_be_visible()

    # The other panels listen for the sign-in and call the API at once (the cloud panel lists the
    # projects): the session they use must be ready before they hear of it.
    with lab.page.expect_response(lambda r: "/projects?" in r.url and r.status == 200):
        lab.log_in(email, PASSWORD)
    lab.signed_in()
    expect(lab.page.locator("#who")).to_have_text(email)
    expect(lab.page.locator("#account-title")).to_be_focused()
    assert len(live_sessions(user["uid"])) == 1


def test_a_wrong_password_shows_the_problem_detail(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.allowed.append((401, "/auth/login"))
    lab.open()
    lab.log_in(user["email"], "not the password")
    expect(lab.auth_message).to_have_text(auth.BAD_CREDENTIALS)
    expect(lab.page.locator("#signed-out")).to_be_visible()
    expect(lab.page.locator("#resend-row")).to_be_visible()  # it may be an unconfirmed address: said alike
    assert sessions_of(user["uid"]) == []


def test_an_unverified_sign_in_offers_a_new_link_which_arrives(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user(verified=False)
    lab.allowed.append((401, "/auth/login"))
    lab.open()
    lab.log_in(user["email"], user["password"])
    expect(lab.auth_message).to_have_text(auth.BAD_CREDENTIALS)  # as for a wrong password: no enumeration
    assert mails_to(user["email"], "verify_email") == []  # made directly: no mail yet
    lab.page.get_by_role("button", name="Send the link again").click()
    expect(lab.auth_message).to_have_text(f"Check your inbox: we sent a new confirmation link to {user['email']}.")
    (mail,) = mails_to(user["email"], "verify_email")

    # Opened in the tab already showing the lab: the fragment changes, the page follows it.
    lab.page.goto(link_in(mail, "verify-email"))
    expect(lab.auth_message).to_have_text("Your email is confirmed. You can sign in now.")
    assert "#" not in lab.page.url
    lab.log_in(user["email"], user["password"])
    lab.signed_in()
    expect(lab.page.locator("#who")).to_have_text(user["email"])


def test_forgot_password_then_the_mailed_link_sets_a_new_one(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.open()
    lab.page.get_by_role("tab", name="Forgot password").click()
    lab.page.locator("#forgot-email").fill(user["email"])
    lab.page.get_by_role("button", name="Send the reset link").click()
    expect(lab.auth_message).to_contain_text(f"If {user['email']} has an account with a password, a link")
    (mail,) = wait(lambda: mails_to(user["email"], "password_reset"))
    link = link_in(mail, "reset-password")

    lab.fresh_load(link)
    assert lab.page.url == lab.stack.gateway_url + "/"
    expect(lab.page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    expect(lab.page.locator("#reset-password")).to_be_focused()
    expect(lab.page.locator("#auth-tabs")).to_be_hidden()
    lab.page.locator("#reset-password").fill(NEW_PASSWORD)
    lab.page.get_by_role("button", name="Set the new password").click()
    expect(lab.auth_message).to_have_text("Your password is changed and every device was signed out. Sign in again.")
    expect(lab.page.locator("#login-form")).to_be_visible()
    assert mails_to(user["email"], "password_changed")

    lab.allowed.append((401, "/auth/login"))
    lab.log_in(user["email"], user["password"])  # the old one
    expect(lab.auth_message).to_have_text(auth.BAD_CREDENTIALS)
    lab.log_in(user["email"], NEW_PASSWORD)
    lab.signed_in()
    expect(lab.page.locator("#who")).to_have_text(user["email"])


# --- signed in --------------------------------------------------------------------------------------


def test_change_password_signs_out_the_other_devices(labs, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    here, there = two_devices(labs, user, viewport=lab_support.PHONE)
    here.open_account(devices=2)
    here.page.get_by_label("Current password").fill(user["password"])
    here.page.locator("#change-form").get_by_label("New password").fill(NEW_PASSWORD)
    expect(here.page.get_by_label("Sign out my other devices")).to_be_checked()
    here.page.get_by_role("button", name="Change password").click()
    expect(here.page.locator("#change-message")).to_have_text(
        "Your password is changed. 1 other device(s) were signed out."
    )
    expect(here.sessions).to_have_count(1)
    expect(here.page.get_by_label("Current password")).to_have_value("")
    (other,) = [s for s in sessions_of(user["uid"]) if "iPhone" in s["user_agent"]]
    assert other["revoke_reason"] == "password_change"

    there.reload_to_ended()  # its next refresh: the session is over
    here.page.reload()
    here.signed_in()  # this device stays signed in
    here.allowed.append((401, "/auth/login"))
    here.page.get_by_role("button", name="Sign out of this device").click()
    here.signed_out()
    here.log_in(user["email"], user["password"])
    expect(here.auth_message).to_have_text(auth.BAD_CREDENTIALS)
    here.log_in(user["email"], NEW_PASSWORD)
    here.signed_in()


def test_a_wrong_current_password_changes_nothing(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    lab.open_account(devices=1)
    lab.allowed.append((403, "/auth/password-change"))
    lab.page.get_by_label("Current password").fill("not it at all")
    lab.page.locator("#change-form").get_by_label("New password").fill(NEW_PASSWORD)
    lab.page.get_by_role("button", name="Change password").click()
    expect(lab.page.locator("#change-message")).to_have_text("The current password is not correct.")
    expect(lab.page.get_by_label("Current password")).to_be_focused()
    lab.page.get_by_role("button", name="Sign out of this device").click()
    lab.signed_out()
    lab.log_in(user["email"], user["password"])
    lab.signed_in()


def test_the_devices_list_shows_both_and_revokes_the_other(labs, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    here, there = two_devices(labs, user, viewport=lab_support.PHONE)

    here.open_account(devices=2)
    current = here.page.locator("#sessions > li[data-current=true]")
    expect(current).to_have_count(1)
    expect(current).to_contain_text("This device")
    expect(current).to_contain_text("Chrome on Linux")
    expect(current).to_contain_text("with email and password")
    expect(current.get_by_role("button")).to_have_count(0)
    phone = here.page.locator("#sessions > li[data-current=false]")
    expect(phone).to_contain_text("Safari on iOS")
    expect(phone).not_to_contain_text("This device")
    expect(phone).to_contain_text("Last used")
    here.screenshot("account-sessions-desktop", locator="#account")

    there.open_account(devices=2)
    expect(there.page.locator("#sessions > li[data-current=true]")).to_contain_text("Safari on iOS")
    there.no_sideways_scroll()
    there.screenshot("account-sessions-phone", locator="#account")

    phone.get_by_role("button", name=re.compile(r"^Sign out Safari on iOS, signed in ")).click()
    expect(here.sessions).to_have_count(1)
    expect(here.page.locator("#sessions-message")).to_contain_text("Safari on iOS (signed in ")
    expect(here.page.locator("#devices-title")).to_be_focused()
    (revoked,) = [s for s in sessions_of(user["uid"]) if "iPhone" in s["user_agent"]]
    assert revoked["revoked_at"] is not None and revoked["revoke_reason"] == "user_revoked"
    (left,) = live_sessions(user["uid"])
    assert "iPhone" not in left["user_agent"]

    there.reload_to_ended()  # the phone's next refresh is refused


def test_sign_out_of_this_device_then_everywhere(labs, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    here, there = two_devices(labs, user)
    here.page.get_by_role("button", name="Sign out of this device").click()
    here.signed_out()
    expect(here.auth_message).to_have_text("You are signed out on this device.")
    expect(here.page.locator("#signin-title")).to_be_focused()
    (left,) = live_sessions(user["uid"])
    assert "iPhone" in left["user_agent"]
    here.page.reload()
    here.signed_out()  # the cookie is gone: a quiet 204, no error
    assert here.responses.count((204, "/auth/refresh")) >= 2
    there.page.reload()
    there.signed_in()  # the other device is untouched

    here.sign_in(user)
    there.page.get_by_role("button", name="Sign out everywhere").click()
    there.signed_out()
    expect(there.auth_message).to_have_text("You are signed out on every device.")
    assert live_sessions(user["uid"]) == []
    here.reload_to_ended()


def test_the_page_refreshes_its_token_before_it_expires(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.page.clock.install()
    lab.sign_in(user)
    (before,) = live_sessions(user["uid"])
    refreshes = lab.responses.count((200, "/auth/refresh"))
    lab.page.clock.fast_forward("08:00")  # the access token lives 10 minutes: not yet
    lab.page.wait_for_timeout(300)
    assert lab.responses.count((200, "/auth/refresh")) == refreshes
    with lab.page.expect_response(lambda r: r.url.endswith("/auth/refresh") and r.status == 200):
        lab.page.clock.fast_forward("01:30")  # a minute before expiry
    (after,) = live_sessions(user["uid"])
    assert after["id"] == before["id"] and after["counter"] == before["counter"] + 1
    lab.open_account(devices=1)  # the new token works
    expect(lab.page.locator("#signed-in")).to_be_visible()


def test_continue_with_google_through_the_stand_in(lab: Lab, stack: Stack) -> None:
    from playwright.sync_api import expect

    lab.open("?backend=cpu")
    lab.signed_out()
    google = lab.page.get_by_role("link", name="Continue with Google")
    expect(google).to_have_attribute("href", "/auth/google/login?return_to=%2F%3Fbackend%3Dcpu")
    google.click()
    lab.page.wait_for_url(f"{lab.oidc_url}/**", wait_until="commit")
    lab.page.fill("#subject-input", "alice-google-0001")
    lab.page.click("button[type=submit]:has-text('Authorize')", no_wait_after=True)
    lab.page.wait_for_url(stack.gateway_url + "/?backend=cpu", wait_until="domcontentloaded")  # back where it was
    lab.signed_in()
    expect(lab.page.locator("#who")).to_have_text("alice@example.com")
    lab.open_account(devices=1)
    expect(lab.sessions).to_contain_text("with Google")
    alice = users.find_by_email("alice@example.com")
    assert alice, "the Google sign-in made no user"
    assert [s["method"] for s in live_sessions(alice["uid"])] == ["google"]

    # Deny on the provider's page: back on the lab, told so, still signed out.
    lab.page.get_by_role("button", name="Sign out of this device").click()
    lab.signed_out()
    google.click()
    lab.page.wait_for_url(f"{lab.oidc_url}/**", wait_until="commit")
    lab.page.get_by_role("button", name="Deny access").click()
    lab.page.wait_for_url(
        re.compile(re.escape(stack.gateway_url) + r"/(\?backend=cpu)?$"), wait_until="domcontentloaded"
    )
    lab.signed_out()
    expect(lab.auth_message).to_have_text("Google sign-in was canceled: you are not signed in.")
    assert "signin_error" not in lab.page.url
    assert live_sessions(alice["uid"]) == []


def test_a_password_account_connects_google_and_a_google_sign_in_alone_is_told_what_to_do(
    lab: Lab, stack: Stack, new_user
) -> None:
    from playwright.sync_api import expect

    user = new_user(email="alice@example.com")
    lab.open("?backend=cpu")
    lab.signed_out()
    lab.page.get_by_role("link", name="Continue with Google").click()
    lab.page.wait_for_url(f"{lab.oidc_url}/**", wait_until="commit")
    lab.page.fill("#subject-input", "alice-google-0001")
    lab.page.click("button[type=submit]:has-text('Authorize')", no_wait_after=True)
    lab.page.wait_for_url(re.compile(re.escape(stack.gateway_url) + r"/\?.*"), wait_until="domcontentloaded")
    lab.signed_out()
    expect(lab.auth_message).to_contain_text("If you did not, reset the password below")
    expect(lab.page.locator("#tab-forgot")).to_have_attribute("aria-selected", "true")
    assert "signin_error" not in lab.page.url
    lab.screenshot("google-account-exists")

    lab.log_in(user["email"], user["password"])
    lab.signed_in()
    lab.open_account(devices=1)
    expect(lab.page.locator("#methods-list")).to_have_text("You sign in with email and password.")
    lab.page.get_by_role("link", name="Connect Google").click()
    lab.page.wait_for_url(f"{lab.oidc_url}/**", wait_until="commit")
    lab.page.fill("#subject-input", "alice-google-0001")
    lab.page.click("button[type=submit]:has-text('Authorize')", no_wait_after=True)
    lab.page.wait_for_url(re.compile(re.escape(stack.gateway_url) + r"/.*"), wait_until="domcontentloaded")
    lab.signed_in()
    lab.open_account(devices=2)
    expect(lab.page.locator("#methods-list")).to_have_text("You sign in with email and password or Google.")
    expect(lab.page.locator("#connect-google-row")).to_be_hidden()
    assert sorted(users.get(user["uid"])["providers"]) == ["google", "password"]


# --- your data --------------------------------------------------------------------------------------


def test_download_my_data_is_a_json_file_with_the_account(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    lab.open_account(devices=1)
    with lab.page.expect_download() as info:
        lab.page.get_by_role("button", name="Download my data").click()
    download = info.value
    assert re.fullmatch(r"mllab-export-\d{4}-\d{2}-\d{2}\.json", download.suggested_filename)
    with open(download.path(), encoding="utf-8") as f:
        data = json.load(f)
    assert data["user"]["email"] == user["email"] and data["user"]["uid"] == user["uid"]
    assert [s["id"] for s in data["sessions"]] == [s["id"] for s in sessions_of(user["uid"])]
    assert "hash" not in json.dumps(data["identities"])
    expect(lab.page.locator("#data-message")).to_have_text(
        f"Downloaded {download.suggested_filename}: your account, devices, projects, models, datasets, "
        "training runs and billing records."
    )


def test_delete_account_with_the_password(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    lab.open_account()
    delete = lab.page.get_by_role("button", name="Delete my account")
    lab.page.locator("#delete-password").fill("not the password")
    delete.click()  # the confirmation box is required: the browser stops the form
    assert lab.page.evaluate("document.getElementById('delete-confirm').validity.valueMissing")
    assert not [r for r in lab.responses if r[1] == "/account"]

    lab.allowed.append((403, "/account"))
    lab.page.get_by_label("I understand that my account and everything in it will be deleted.").check()
    delete.click()
    expect(lab.page.locator("#delete-message")).to_have_text("The password is wrong. Nothing was deleted.")
    assert not users.get(user["uid"]).get("deleted_at")

    # The session ended with the account; signing this device out just clears the cookie (204).
    lab.allowed += [(403, "/auth/login")]
    lab.page.locator("#delete-password").fill(user["password"])
    delete.click()
    lab.signed_out()
    expect(lab.auth_message).to_have_text(
        "Your account is deleted and every device is signed out. Your models, "
        "datasets and files are removed for good in 30 days."
    )
    assert (204, "/auth/logout") in lab.responses
    gone = users.get(user["uid"])
    assert gone["deleted_at"] and gone["disabled"]
    assert live_sessions(user["uid"]) == []
    lab.page.reload()
    lab.signed_out()
    assert (204, "/auth/refresh") in lab.responses  # the cookie was cleared at deletion: a quiet load
    assert (401, "/auth/refresh") not in lab.responses
    lab.log_in(user["email"], user["password"])
    expect(lab.auth_message).to_contain_text("This account is disabled.")


def test_delete_account_right_after_signing_in_needs_no_password(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    lab.open_account()
    lab.page.get_by_label("I understand that my account and everything in it will be deleted.").check()
    lab.page.get_by_role("button", name="Delete my account").click()
    lab.signed_out()
    expect(lab.auth_message).to_contain_text("Your account is deleted")
    assert users.get(user["uid"])["deleted_at"]
