"""A shared model's page in Chromium (/m/?id=<deployment id>): its name, description and inputs, and
predictions made in the visitor's browser with TF.js from the model's files through signed URLs,
equal to the lab's own; a private or unknown id says it is not shared. The page reads
GET /public/deployments/{id} from the stack's deployments function (real signed URLs, real files)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from playwright.sync_api import expect

from mllab.serving import apikeys, cells, deployments

from . import lab_support
from .serving_support import golden_files, pro, saved_version

lab = lab_support.fixture(lab_support.Lab)


def as_typed(value) -> str:
    """A value as a person types or picks it in the form (numbers spelled as the page spells them)."""
    return "" if value is None else value if isinstance(value, str) else cells.key(value)


def shared_deployment(new_user, *, public: bool = True) -> str:
    uid = new_user()["uid"]
    pro(uid)
    model, n = saved_version(uid, *golden_files()[:2])
    dep = deployments.create(uid, model["id"], n)
    if public:
        deployments.update(uid, dep["id"], {"public": True, "description": "Will this customer churn?"})
    apikeys.create(uid, "unused", ["predict"])
    return dep["id"]


def test_a_shared_model_predicts_in_the_visitors_browser(lab: lab_support.Lab, new_user) -> None:
    dep_id = shared_deployment(new_user)
    lab.page.goto(f"{lab.stack.gateway_url}/m/?id={dep_id}&backend=cpu")
    expect(lab.page.locator("#share-title")).to_have_text("churn")
    expect(lab.page.locator("#share-description")).to_have_text("Will this customer churn?")
    expect(lab.page.locator("#share")).to_have_attribute("data-ready", "true")
    _, _, recorded = golden_files()
    vocabulary = {f["name"]: set(f.get("values", [])) for f in deployments.public_view(dep_id)["features"]}
    compared = 0
    for row, theirs in zip(recorded["rows"], recorded["predictions"], strict=True):
        typed = {name: as_typed(value) for name, value in row.items()}
        if any(vocabulary[n] and t not in vocabulary[n] | {""} for n, t in typed.items()):
            continue  # a category the form's list does not offer (unseen in training)
        for name, text in typed.items():
            control = lab.page.get_by_label(name, exact=True)
            if vocabulary[name]:
                control.select_option(text)
            else:
                control.fill(text)
        out = lab.page.locator("#share-prediction")
        out.evaluate("e => { delete e.dataset.label; }")
        lab.page.get_by_role("button", name="Predict").click()
        expect(out).to_have_attribute("data-label", str(theirs["label"]))
        mine = json.loads(out.get_attribute("data-probabilities"))
        assert all(abs(a - b["p"]) <= 1e-6 for a, b in zip(mine, theirs["probabilities"], strict=True))
        compared += 1
    assert compared >= 10
    # The lab's one number format (js/format.js): a share as "78.3 %".
    expect(out.locator("li").first).to_have_text(re.compile(r": \d{1,3}\.\d %$"))
    embed = lab.page.locator("#share-embed-code").text_content()
    assert f'src="{lab.stack.gateway_url}/m/{dep_id}"' in embed and embed.startswith("<iframe")
    assert not [u for u in lab.requests if "/predict/" in u]  # no server inference
    lab.no_sideways_scroll()
    lab.resize(lab_support.PHONE)
    lab.no_sideways_scroll("the shared model's page on a phone")
    lab.screenshot("share-page-phone")


def test_a_private_or_unknown_model_is_not_shared(lab: lab_support.Lab, new_user) -> None:
    private = shared_deployment(new_user, public=False)
    lab.allowed += [(404, f"/public/deployments/{private}"), (404, "/public/deployments/nosuchmodel")]
    for dep_id in (private, "nosuchmodel"):
        lab.page.goto(f"{lab.stack.gateway_url}/m/?id={dep_id}")
        expect(lab.page.locator("#share-title")).to_have_text("This model is not shared")
        expect(lab.page.locator("#share-message")).to_contain_text(deployments.NOT_SHARED)
        expect(lab.page.locator("#share-body")).to_be_hidden()
    lab.page.goto(f"{lab.stack.gateway_url}/m/")
    expect(lab.page.locator("#share-title")).to_have_text("No model here")


def test_the_share_page_opens_at_its_path(lab: lab_support.Lab, new_user) -> None:
    dep_id = shared_deployment(new_user)
    lab.page.goto(f"{lab.stack.gateway_url}/m/{dep_id}")
    expect(lab.page.locator("#share-title")).to_have_text("churn")
    expect(lab.page.locator("#share")).to_have_attribute("data-ready", "true")


@contextmanager
def another_site(html: str) -> Iterator[str]:
    """Another origin (a port of its own) serving one page: `html`. Loopback like the stack, so Chromium's
    private network rules treat both alike and only the frame's own headers decide."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_another_site_may_frame_the_share_page_but_no_other_page_of_the_lab(chromium, stack, new_user) -> None:
    dep_id = shared_deployment(new_user)
    frames = (
        f'<!doctype html><iframe id="share" src="{stack.gateway_url}/m/{dep_id}" title="shared model"></iframe>'
        f'<iframe id="lab" src="{stack.gateway_url}/" title="the lab"></iframe>'
    )
    context = chromium.new_context()
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda msg: console.append(msg.text))
        with another_site(frames) as site:
            assert not site.startswith(stack.gateway_url)
            page.goto(site)
            shared = page.frame_locator("#share")
            expect(shared.locator("#share-title")).to_have_text("churn")
            expect(shared.locator("#share")).to_have_attribute("data-ready", "true")
        # The lab itself may not be framed (frame-ancestors 'none'): Chromium refuses and says why.
        expect(page.frame_locator("#lab").locator("#account")).to_have_count(0)
        refusals = [t for t in console if "frame-ancestors 'none'" in t and stack.gateway_url in t]
        assert refusals, console
        assert not [t for t in console if "frame-ancestors" in t and "/m/" in t]
    finally:
        context.close()
