"""Outgoing mail through the `mail_outbox` collection.

Every message is written to the outbox first, then delivered: by SMTP in production (URL in the
`smtp-url` secret), as JSON files under `.dev/mail/` locally. Once delivered, the link (which may
carry a one-time token) is removed from the outbox document. No link ever reaches a log line.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from mllab.platform import clients, clock, config, log

OUTBOX = "mail_outbox"

TEMPLATES: dict[str, tuple[str, str]] = {
    "verify_email": (
        "Confirm your email for ML Lab",
        "Welcome to ML Lab. Confirm this address to start using your account:\n\n{link}\n\n"
        "The link works once and expires in 24 hours.",
    ),
    "already_registered": (
        "Someone tried to sign up with your email",
        "Someone (maybe you) tried to create an ML Lab account with this address, which already "
        "has one. If it was you, sign in or reset your password:\n\n{link}\n\n"
        "If it wasn't, you can ignore this mail.",
    ),
    "password_reset": (
        "Reset your ML Lab password",
        "Use this link to choose a new password. It works once and expires in 30 minutes:\n\n{link}\n\n"
        "If you didn't ask for it, ignore this mail; your password stays as it is.",
    ),
    "password_changed": (
        "Your ML Lab password was changed",
        "The password of your ML Lab account was just changed. If this wasn't you, reset it at once:\n\n{link}",
    ),
    "password_removed": (
        "We removed a password from your ML Lab account",
        "You just signed in to ML Lab with Google as {email}. An account with this address "
        "had been started with a password, but nobody ever confirmed the address, so that "
        "password was never proven to be yours. We removed it and signed out every device that "
        "used it; only your Google sign-in works now. If you want a password as well, set one "
        "with a reset link:\n\n{link}",
    ),
    # dunning and billing notices (fields: until = the date PRO ends)
    "payment_failed": (
        "Your ML Lab payment did not go through",
        "PayPal could not collect your ML Lab PRO payment. PayPal will try again; you can also check "
        "the payment method in your PayPal account (Settings > Payments > Automatic payments).\n\n"
        "Your PRO access continues until {until} while this is sorted out.\n\n{link}",
    ),
    "past_due": (
        "Your ML Lab subscription is past due",
        "Your ML Lab PRO subscription is past due and PayPal has suspended it. Unless the payment is settled "
        "in PayPal, PRO ends on {until}. Your saved models and datasets stay yours.\n\n{link}",
    ),
    "access_ending": (
        "Your ML Lab PRO access ends soon",
        "Your ML Lab PRO access ends on {until}. After that, you can keep training in the browser, "
        "but cloud saves stop. Subscribe again any time:\n\n{link}",
    ),
    "subscription_activated": (
        "Your ML Lab PRO subscription is active",
        "Thank you for subscribing to ML Lab PRO ({amount} {currency} a month). "
        "{first_charge}\n\nManage or cancel it any time under Billing:\n\n{link}",
    ),
    "payment_receipt": (
        "Your ML Lab receipt: {amount} {currency}",
        "Receipt for your ML Lab PRO subscription.\n\n"
        "Amount: {amount} {currency}\nDate: {date}\nNext billing date: {next_billing}\n"
        "PayPal transaction ID: {transaction_id}\nSubscription: {subscription_id}\n\n{link}",
    ),
    "subscription_canceled": (
        "Your ML Lab subscription is canceled",
        "Your ML Lab PRO subscription is canceled and you will not be charged again. PRO stays "
        "on until {until}, the end of the period you paid for.\n\n{link}",
    ),
}


def send(to: str, template: str, link: str | None = None, **fields: str) -> None:
    """`fields` fill the template's other placeholders (plain values such as dates, never secrets)."""
    subject, body = TEMPLATES[template]
    ref = clients.firestore().collection(OUTBOX).document()
    ref.create(queued(to, template, link, **fields))
    try:
        deliver(to, subject.format(**fields), body.format(link=link or config.settings().lab_url, **fields), template)
    except Exception as exc:  # noqa: BLE001 - the outbox keeps it for a retry
        log.exception("mail delivery failed; kept in the outbox", exc, template=template, outbox_id=ref.id)
        ref.update({"attempts": 1, "updated_at": clock.now()})
        return
    ref.update({"sent_at": clock.now(), "link": None, "attempts": 1, "updated_at": clock.now()})
    log.info("mail sent", template=template, outbox_id=ref.id)


def ref(key: str) -> Any:
    """The outbox document of a message identified by `key`: one message per key, ever (a key names
    the event the mail is about, so a redelivered event finds its mail already there)."""
    return clients.firestore().collection(OUTBOX).document(key)


def queued(to: str, template: str, link: str | None = None, **fields: str) -> dict[str, Any]:
    """An outbox document to create inside the caller's transaction; `deliver_queued` sends it after
    the commit."""
    TEMPLATES[template][1].format(link="", **fields)  # a missing field fails here, before anything is stored
    now = clock.now()
    return {
        "to": to,
        "template": template,
        "link": link,
        "fields": fields,
        "created_at": now,
        "sent_at": None,
        "attempts": 0,
        "updated_at": now,
    }


def deliver_queued(key: str) -> bool:
    """Send the outbox message `key` unless it was sent already. A failure keeps it in the outbox
    (attempts counted) and returns False."""
    from google.cloud import firestore

    outbox = ref(key)
    db = clients.firestore()

    @firestore.transactional
    def take(tx: Any) -> dict[str, Any] | None:
        snap = outbox.get(transaction=tx)
        doc = snap.to_dict() if snap.exists else None
        if doc is None or doc.get("sent_at") is not None:
            return None
        tx.update(outbox, {"attempts": int(doc.get("attempts") or 0) + 1, "updated_at": clock.now()})
        return doc

    doc = take(db.transaction(max_attempts=5))
    if doc is None:
        return False
    subject, body = TEMPLATES[doc["template"]]
    fields = doc.get("fields") or {}
    try:
        deliver(
            doc["to"],
            subject.format(**fields),
            body.format(link=doc.get("link") or config.settings().lab_url, **fields),
            doc["template"],
        )
    except Exception as exc:  # noqa: BLE001 - the outbox keeps it for a retry
        log.exception("mail delivery failed; kept in the outbox", exc, template=doc["template"], outbox_id=key)
        return False
    outbox.update({"sent_at": clock.now(), "link": None, "updated_at": clock.now()})
    log.info("mail sent", template=doc["template"], outbox_id=key)
    return True


def deliver(to: str, subject: str, body: str, template: str) -> None:
    s = config.settings()
    if not s.is_production:
        folder = s.dev_dir / "mail"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{clock.now().strftime('%Y%m%dT%H%M%S%f')}-{template}-{secrets.token_hex(3)}.json"
        (folder / name).write_text(
            json.dumps(
                {"to": to, "from": s.mail_from, "subject": subject, "body": body, "template": template}, indent=1
            )
        )
        return
    _smtp(to, subject, body, s.mail_from, config.secret(config.SMTP_URL).strip())


def _smtp(to: str, subject: str, body: str, sender: str, url: str) -> None:
    import smtplib
    from email.message import EmailMessage
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if not parts.hostname:  # smtplib would build an unconnected client and fail later, less clearly
        raise ValueError("the SMTP URL names no host")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    timeout = clients.deadline()
    if parts.scheme == "smtps":
        server: Any = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=timeout)
    else:
        server = smtplib.SMTP(parts.hostname, parts.port or 587, timeout=timeout)
        server.starttls()
    with server:
        if parts.username:
            server.login(unquote(parts.username), unquote(parts.password or ""))
        server.send_message(msg)


def dev_messages() -> list[dict[str, Any]]:
    """Messages delivered locally, oldest first (tests and the lab's dev mail view read these)."""
    folder = config.settings().dev_dir / "mail"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
