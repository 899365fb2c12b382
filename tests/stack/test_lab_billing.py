"""The lab's Billing section in a real browser (Debian's Chromium through Playwright) against the local
stack: subscribe through the PayPal stand-in's approval page and come back PRO, cancel and keep PRO
to the paid-through date, redeem a promo code, and abandon a checkout without being charged."""

from __future__ import annotations

from datetime import datetime

from mllab.billing import entitlements
from mllab.platform import clock
from mllab_dev.stack import Stack

from . import lab_support

# A billing action is a PayPal call, a re-read and a Firestore transaction: under a full test run on
# two cores that can take longer than Playwright's default 5 s.

WAIT_MS = 30_000  # a checkout crosses the gateway, the billing function and the stand-in twice


class Lab(lab_support.Lab):
    """The lab page's billing section. The PayPal stand-in serves https with a development CA the
    browser does not know: the context ignores certificate errors, which only the stand-in's approval
    page needs."""

    def __init__(self, chromium, stack: Stack) -> None:
        super().__init__(chromium, stack, ignore_https_errors=True)
        self.page.set_default_timeout(WAIT_MS)

    @property
    def status(self):
        return self.page.locator("#plan-status")

    @property
    def message(self):
        return self.page.locator("#billing-message")

    def sign_in(self, user: dict, query: str = "") -> None:
        super().sign_in(user, query)
        self.page.wait_for_selector("#billing:not([hidden])")

    def start_checkout(self) -> None:
        from playwright.sync_api import expect

        expect(self.status).to_have_attribute("data-plan", "free")
        expect(self.page.locator("#plan-price")).to_contain_text("$15.00/month")
        self.page.get_by_role("button", name="Subscribe with PayPal").click()
        self.page.wait_for_url(
            f"{self.stack.paypal_url}/webapps/billing/subscriptions?ba_token=*", wait_until="domcontentloaded"
        )

    def back_from_paypal(self, button: str) -> None:
        self.page.get_by_role("button", name=button).click()
        # PayPal's redirect lands on /?billing=...; the lab then drops the query string.
        self.page.wait_for_url(self.stack.gateway_url + "/", wait_until="domcontentloaded")

    def subscribe(self) -> None:
        from playwright.sync_api import expect

        from .billing_support import deliveries_settled, standin, wait

        self.start_checkout()
        self.back_from_paypal("Agree & Subscribe")
        expect(self.status).to_have_attribute("data-status", "active")
        expect(self.status).to_have_attribute("data-plan", "pro")
        expect(self.message).to_have_text("Thanks — PRO is active.")
        # Let the approval's webhooks finish, so what the test does next does not race them on the
        # emulator (whose transaction locks make concurrent writers wait seconds under load).
        sub_id = entitlements.get(self.uid)["paypal_subscription_id"]
        with standin(self.stack) as paypal:
            assert wait(lambda: deliveries_settled(paypal, sub_id))


lab = lab_support.fixture(Lab)


def shown(dt: datetime) -> str:
    """A date as the lab shows it (en-US, the context's UTC): Dec 22, 2026."""
    return f"{dt:%b} {dt.day}, {dt.year}"


def test_subscribe_through_paypal_and_see_pro(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    expect(lab.status).to_have_text("Free plan")
    expect(lab.status).to_have_attribute("data-status", "none")
    expect(lab.page.locator("#usage")).not_to_contain_text("Predictions")  # no deployments on the free plan
    lab.subscribe()
    assert lab.page.url == lab.stack.gateway_url + "/"  # no ?billing=return&subscription_id=... left
    ent = entitlements.get(user["uid"])
    renews = entitlements.parse_time(ent["paypal"]["next_billing_time"])
    expect(lab.status).to_have_text(f"PRO — renews {shown(renews)}")
    expect(lab.page.locator("#cancel-subscription")).to_be_visible()
    expect(lab.page.locator("#subscribe")).to_be_hidden()
    expect(lab.page.locator("#usage")).to_contain_text("Storage: 0 B of 5 GiB")
    expect(lab.page.locator("#usage")).to_contain_text("Predictions this month: 0 of 100,000")

    lab.page.reload()  # the state comes from the server, not from the return URL
    expect(lab.status).to_have_attribute("data-status", "active")
    expect(lab.message).to_have_text("")


def test_the_billing_panel_shows_this_months_predictions_against_the_plan(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    from . import serving_support

    user = new_user()
    serving_support.pro(user["uid"])
    serving_support.used_up(user["uid"], 1234)  # counted by the predict path this month
    lab.sign_in(user)
    usage = lab.page.locator("#usage")
    expect(usage).to_contain_text("Predictions this month: 1,234 of 100,000")
    expect(lab.page.locator("#plan-price")).to_contain_text("20 deployments and 100,000 predictions a month")

    serving_support.not_pro(user["uid"])  # PRO ended: the month's count stays visible, with no quota
    lab.page.reload()
    expect(lab.status).to_have_text("Free plan")
    expect(usage).to_contain_text("Predictions this month: 1,234 (deployments come with PRO)")


def test_cancel_keeps_pro_to_the_paid_through_date(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    lab.subscribe()
    dialogs: list[str] = []

    def accept(dialog) -> None:
        dialogs.append(dialog.type)
        dialog.accept()

    lab.page.once("dialog", accept)
    lab.page.get_by_role("button", name="Cancel subscription").click()
    expect(lab.status).to_have_attribute("data-status", "canceled")
    expect(lab.status).to_have_attribute("data-plan", "pro")
    assert dialogs == ["confirm"]
    paid_through = entitlements.pro_until(entitlements.get(user["uid"]))
    assert paid_through is not None and paid_through > clock.now()
    expect(lab.status).to_have_text(f"PRO until {shown(paid_through)} (canceled)")
    expect(lab.message).to_contain_text("canceled")
    expect(lab.page.locator("#subscribe")).to_be_visible()
    expect(lab.page.locator("#cancel-subscription")).to_be_hidden()


def test_promo_code_gives_a_trial_and_unknown_codes_say_why(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    from mllab.billing import promo

    promo.create(promo.NewCode(code="LAB7", kind="trial", days=7, uses=5))
    user = new_user()
    lab.sign_in(user)
    lab.page.fill("#promo-code", "lab7")  # codes are case-insensitive
    lab.page.get_by_role("button", name="Apply").click()
    expect(lab.status).to_have_attribute("data-status", "trial")
    expect(lab.status).to_have_attribute("data-plan", "pro")
    expect(lab.message).to_have_text("Code applied: 7-day PRO trial")
    trial_until = entitlements.parse_time(entitlements.get(user["uid"])["trial_until"])
    expect(lab.status).to_have_text(f"PRO trial until {shown(trial_until)}")
    expect(lab.page.locator("#promo-code")).to_have_value("")
    # Subscribing now would not throw the trial away: the first charge is at its end.
    expect(lab.page.locator("#first-charge-date")).to_have_text(
        f"Your first charge of $15.00 will be on {shown(trial_until)}"
    )

    lab.allowed.append((422, "/promo/apply"))
    lab.page.fill("#promo-code", "NOPE")
    lab.page.get_by_role("button", name="Apply").click()
    expect(lab.message).to_contain_text("There is no promo code NOPE")
    expect(lab.message).to_have_class("problem")
    assert "{" not in lab.message.text_content()  # the detail, never the raw problem document
    expect(lab.status).to_have_attribute("data-status", "trial")  # unchanged
    expect(lab.page.get_by_role("button", name="Apply")).to_be_enabled()


def test_checkout_canceled_at_paypal_stays_free(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    user = new_user()
    lab.sign_in(user)
    lab.start_checkout()
    lab.back_from_paypal("Cancel and return to merchant")
    expect(lab.message).to_have_text("Checkout canceled; you were not charged.")
    expect(lab.status).to_have_attribute("data-plan", "free")
    expect(lab.status).to_have_attribute("data-status", "none")
    expect(lab.page.get_by_role("button", name="Subscribe with PayPal")).to_be_visible()
    assert lab.page.url == lab.stack.gateway_url + "/"


def test_last_payment_past_due_banner_and_cancel_at_paypal(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    from .billing_support import deliveries_settled, standin, wait

    user = new_user()
    lab.sign_in(user)
    lab.subscribe()
    sub_id = entitlements.get(user["uid"])["paypal_subscription_id"]
    paid = entitlements.get(user["uid"])["paypal"]["last_payment_time"]
    expect(lab.page.locator("#last-payment")).to_have_text(f"Last payment: $15.00 on {shown(paid)}")
    manage = lab.page.get_by_role("link", name="Manage automatic payments at PayPal")
    expect(manage).to_have_attribute("href", f"{lab.stack.paypal_url}/myaccount/autopay/")
    expect(lab.page.locator("#past-due")).to_be_hidden()

    # A renewal fails: the page says so, with the date access lasts to, and where to fix it.
    with standin(lab.stack) as paypal:
        assert (
            paypal.post(
                f"/_standin/subscriptions/{sub_id}/simulate", json={"event": "payment-failed", "deliver": True}
            ).status_code
            == 200
        )
        assert wait(lambda: deliveries_settled(paypal, sub_id))
    assert wait(lambda: entitlements.get(user["uid"])["paypal"].get("past_due_since") is not None)
    lab.page.reload()
    until = entitlements.pro_until(entitlements.get(user["uid"]))
    banner = lab.page.get_by_role("alert").filter(has_text="did not go through")
    expect(banner).to_have_text(
        f"Your last payment did not go through. PRO continues until {shown(until)} "
        "while PayPal retries; update your payment method at PayPal to keep it."
    )
    expect(lab.status).to_have_attribute("data-status", "past_due")
    lab.screenshot("lab-billing-past-due")

    # The buyer cancels at PayPal, not in the lab: the webhook brings it back.
    manage.click()
    lab.page.wait_for_url(f"{lab.stack.paypal_url}/myaccount/autopay/")
    lab.page.get_by_role("button", name=f"Cancel {sub_id}").click()
    lab.page.get_by_role("heading", name="Cancelled").wait_for()
    with standin(lab.stack) as paypal:
        assert wait(lambda: deliveries_settled(paypal, sub_id))
    assert wait(lambda: entitlements.get(user["uid"])["paypal"]["status"] == "CANCELLED")
    lab.page.goto(lab.stack.gateway_url + "/#billing")
    expect(lab.status).to_have_attribute("data-status", "canceled")
    expect(lab.page.locator("#past-due")).to_be_hidden()
    expect(lab.page.locator("#manage-paypal")).to_be_hidden()  # nothing left to manage at PayPal
    expect(lab.page.get_by_role("button", name="Subscribe with PayPal")).to_be_visible()


def test_billing_screens_on_a_phone(chromium, stack: Stack, new_user) -> None:
    from playwright.sync_api import expect

    from mllab.billing import promo

    promo.create(promo.NewCode(code="PHONE14", kind="trial", days=14, uses=5))
    with lab_support.checked(Lab(chromium, stack)) as lab:
        lab.page.set_viewport_size(lab_support.PHONE)
        lab.sign_in(new_user())
        expect(lab.status).to_have_text("Free plan")
        lab.page.fill("#promo-code", "PHONE14")
        lab.page.keyboard.press("Enter")  # the form submits from the keyboard
        expect(lab.status).to_have_attribute("data-status", "trial")
        lab.no_sideways_scroll()
        lab.page.locator("#billing").scroll_into_view_if_needed()
        lab.screenshot("lab-billing-phone")


def test_subscribing_again_after_cancel_shows_the_first_charge_date_before_paypal(lab: Lab, new_user) -> None:
    from playwright.sync_api import expect

    from .billing_support import deliveries_settled, sales_of, standin, wait

    user = new_user()
    lab.sign_in(user)
    # A free user is told the truth too: the first charge is at approval.
    expect(lab.page.locator("#first-charge-date")).to_have_text("Your first charge of $15.00 will be today")
    lab.subscribe()
    expect(lab.page.locator("#first-charge")).to_be_hidden()  # nothing to buy while PRO renews
    lab.page.once("dialog", lambda dialog: dialog.accept())
    lab.page.get_by_role("button", name="Cancel subscription").click()
    expect(lab.status).to_have_attribute("data-status", "canceled")
    paid_through = entitlements.pro_until(entitlements.get(user["uid"]))

    # Before anything happens at PayPal, the lab says when the new subscription will first charge.
    note = lab.page.locator("#first-charge")
    expect(note.locator("#first-charge-date")).to_have_text(
        f"Your first charge of $15.00 will be on {shown(paid_through)}"
    )
    expect(note).to_contain_text("Nothing is charged today and your PRO continues until then")
    lab.page.locator("#billing").scroll_into_view_if_needed()
    lab.screenshot("lab-billing-first-charge", locator="#billing")
    lab.page.set_viewport_size(lab_support.PHONE)
    lab.no_sideways_scroll()
    expect(note).to_be_visible()
    lab.screenshot("lab-billing-first-charge-phone", locator="#billing")

    # PayPal's approval page says the same, and approving charges nothing today.
    lab.page.get_by_role("button", name="Subscribe with PayPal").click()
    lab.page.wait_for_url(
        f"{lab.stack.paypal_url}/webapps/billing/subscriptions?ba_token=*", wait_until="domcontentloaded"
    )
    expect(lab.page.locator("#first-payment")).to_have_text(f"First payment: {paid_through:%b %d, %Y}")
    lab.back_from_paypal("Agree & Subscribe")
    expect(lab.message).to_have_text(
        f"Thanks — you are subscribed. Your first charge will be on {shown(paid_through)}."
    )
    expect(lab.status).to_have_text(f"PRO — subscribed, first charge {shown(paid_through)}")
    expect(lab.status).to_have_attribute("data-plan", "pro")
    sub_id = entitlements.get(user["uid"])["paypal_subscription_id"]
    with standin(lab.stack) as paypal:
        assert wait(lambda: deliveries_settled(paypal, sub_id))
        assert sales_of(paypal, sub_id) == []
