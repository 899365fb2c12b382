"""Every Google API call gets a total deadline, not only a per-attempt timeout."""

from __future__ import annotations

from mllab.platform import clients, config


def test_opts_bound_the_whole_call_retries_included(monkeypatch) -> None:
    monkeypatch.setenv("MLLAB_RPC_TIMEOUT_S", "7")
    config.reload()
    opts = clients.opts()
    assert opts["timeout"] == 7.0
    assert opts["retry"].timeout == 7.0  # google-api-core's total deadline across attempts
    assert opts["retry"]._maximum <= 2.0
