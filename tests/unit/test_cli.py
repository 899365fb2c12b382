"""The operator CLI without emulators: argument parsing, the default target, password input."""

from __future__ import annotations

import io
import os

import pytest

from mllab.ops import cli
from mllab.platform import config


def test_json_and_project_are_accepted_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    for argv in (["--json", "user", "list"], ["user", "list", "--json"]):
        args = parser.parse_args(argv)
        assert args.json is True and args.project is None and args.run is cli.cmd_user_list
    args = parser.parse_args(["user", "list"])
    assert args.json is False
    args = parser.parse_args(["--project", "p1", "accounts", "purge"])
    assert args.project == "p1" and args.run is cli.cmd_accounts_purge
    assert parser.parse_args(["sessions", "revoke", "a@b.co", "--project", "p2"]).project == "p2"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["user"],
        ["user", "create"],
        ["user", "create", "a@b.co", "--role", "root"],
        ["sessions"],
        ["nope"],
        ["user", "list", "--bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: mllab" in capsys.readouterr().err


def _isolate_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first, so monkeypatch restores (removes) what configure_target writes
    for name in ("FIRESTORE_EMULATOR_HOST", "MLLAB_PROJECT", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_default_target_is_the_local_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_target(monkeypatch)
    assert cli.configure_target(None) == ("demo-mllab", "127.0.0.1:8081")
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == "127.0.0.1:8081"
    assert config.settings().project == "demo-mllab"


def test_an_emulator_host_in_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_target(monkeypatch)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9999")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-other")
    assert cli.configure_target(None) == ("demo-other", "127.0.0.1:9999")
    assert config.settings().project == "demo-other"


def test_project_targets_a_real_project(monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate_target(monkeypatch)
    assert cli.configure_target("my-prod-project") == ("my-prod-project", None)
    assert "FIRESTORE_EMULATOR_HOST" not in os.environ
    assert config.settings().project == "my-prod-project"


@pytest.mark.parametrize(
    "stdin, expected", [("pass phrase \n", "pass phrase "), ("abc\r\n", "abc"), ("no-newline", "no-newline")]
)
def test_password_stdin_strips_only_the_line_end(monkeypatch: pytest.MonkeyPatch, stdin: str, expected: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    args = cli.build_parser().parse_args(["user", "create", "a@b.co", "--password-stdin"])
    assert cli.read_password(args) == expected


@pytest.mark.parametrize("stdin", ["two\nlines\n", "\n", ""])
def test_password_stdin_refuses_empty_or_multiline(monkeypatch: pytest.MonkeyPatch, stdin: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    args = cli.build_parser().parse_args(["user", "create", "a@b.co", "--password-stdin"])
    with pytest.raises(cli.UsageError):
        cli.read_password(args)


def test_table_aligns_columns() -> None:
    text = cli.table([{"a": "1", "b": "long value"}, {"a": "22", "b": "x"}], ("a", "b"))
    assert text.splitlines() == ["A   B", "1   long value", "22  x"]
    assert cli.table([], ("a",)) == "(none)"


def test_an_unreachable_emulator_fails_fast_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket
    import time

    _isolate_target(monkeypatch)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{port}")
    started = time.monotonic()
    assert cli.main(["user", "list", "--json"]) == 1
    assert time.monotonic() - started < 5
    out = capsys.readouterr()
    assert "not reachable" in out.err and '"exit_code": 1' in out.out
