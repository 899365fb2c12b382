"""The deployment panel's ready-to-copy snippets (js/snippets.js, made in the page): curl run by bash,
the Python snippet run by Python, the fetch snippet run in the page, each against a stand-in that
records the request: every one sends exactly the example instance to the predict URL, with the key
from the environment, whatever the feature names and values hold (quotes, backslashes, newlines,
non-ASCII, null, booleans)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from typing import Any

import pytest

from . import lab_support

lab = lab_support.fixture(lab_support.Lab, opened=True)

URL = "https://api.example.test/predict/0123abcd"
KEY = "mlk_aaaaaaaaaaaaaaaa_" + "b" * 43
TRICKY = {
    "plain": 3.5,
    "it's": "O'Brien",
    'say "hi"': 'a "quoted" \\ back',
    "multi\nline": "two\nlines $HOME `id`",
    "ünïcode ✓": "日本",
    "missing": None,
    "flag": True,
    "big": 1e21,
}


def made(lab: lab_support.Lab, instance: dict[str, Any]) -> dict[str, str]:
    return lab.page.evaluate(
        """async ([url, instance]) => {
            const s = await import('/js/snippets.js');
            return Object.fromEntries(s.snippets(url, instance).map((x) => [x.id, x.text]));
        }""",
        [URL, instance],
    )


def run_curl(snippet: str) -> list[str]:
    """The arguments curl would get (a shell function stands in for it)."""
    script = "curl() { for a in \"$@\"; do printf '%s\\0' \"$a\"; done; }\n" + snippet
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, check=True, env={**os.environ, "MLLAB_API_KEY": KEY}
    ).stdout
    return out.decode().split("\0")[:-1]


def run_python(snippet: str, monkeypatch) -> dict[str, Any]:
    """What httpx.post would get (a module stands in for httpx)."""
    seen: dict[str, Any] = {}

    class Response:
        def raise_for_status(self) -> None:
            pass

        def json(self) -> dict:
            return {"predictions": [{"label": "yes"}]}

    def post(url, **kw):
        seen.update(url=url, **kw)
        return Response()

    monkeypatch.setitem(sys.modules, "httpx", types.SimpleNamespace(post=post))
    monkeypatch.setenv("MLLAB_API_KEY", KEY)
    exec(compile(snippet, "snippet.py", "exec"), {"__name__": "snippet"})  # noqa: S102  the snippet under test
    return seen


@pytest.mark.parametrize("instance", [TRICKY, {"x1": 0, "x2": 1}])
def test_every_snippet_sends_the_instance_with_the_key(lab: lab_support.Lab, instance: dict, monkeypatch) -> None:
    snippets = made(lab, instance)
    expected = {"instances": [instance]}

    args = run_curl(snippets["curl"])
    assert args[args.index("-X") + 1] == "POST" and URL in args
    assert f"Authorization: Bearer {KEY}" in args
    assert json.loads(args[args.index("-d") + 1]) == expected

    sent = run_python(snippets["python"], monkeypatch)
    assert sent["url"] == URL and sent["json"] == expected
    assert sent["headers"] == {"Authorization": f"Bearer {KEY}"}

    sent = lab.page.evaluate(
        """async ([text, key]) => {
            const seen = {};
            const realFetch = globalThis.fetch;
            globalThis.process = {env: {MLLAB_API_KEY: key}};
            globalThis.fetch = async (url, init) => {
                Object.assign(seen, {url, init});
                return {ok: true, json: async () => ({predictions: [{label: "yes"}]})};
            };
            try {
                await (new Function(`return (async () => { ${text} })();`))();
            } finally {
                globalThis.fetch = realFetch;
                delete globalThis.process;
            }
            return {url: seen.url, headers: seen.init.headers, body: JSON.parse(seen.init.body)};
        }""",
        [snippets["javascript"], KEY],
    )
    assert sent == {
        "url": URL,
        "headers": {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        "body": expected,
    }
    assert KEY not in json.dumps(snippets)  # the snippets name the variable, never a key


def test_the_example_instance_is_a_dataset_row_as_the_model_reads_it(lab: lab_support.Lab) -> None:
    pre = {"features": [{"name": "age", "type": "numeric"}, {"name": "city", "type": "categorical"}]}
    instance = lab.page.evaluate(
        """async (pre) => (await import('/js/snippets.js'))
            .exampleInstance(pre, {age: 31, city: "Lyon", target: "yes"})""",
        pre,
    )
    assert instance == {"age": 31, "city": "Lyon"}  # the target and other columns are left out
    partial = lab.page.evaluate(
        """async (pre) => (await import('/js/snippets.js')).exampleInstance(pre, {age: NaN})""",
        pre,
    )
    assert partial == {"age": None, "city": None}
