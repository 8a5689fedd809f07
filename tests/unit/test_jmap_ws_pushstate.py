"""Unit tests of the JMAP WebSocket helpers (mailserverd/jmap/websocket.py) that need no daemon."""

from __future__ import annotations

import pytest

pytest.importorskip("autobahn", reason="autobahn[twisted]: pip install -e .")

from mailserverd.jmap import websocket  # noqa: E402


def test_push_state_round_trip():
    """A pushState encodes the states the client was told and decodes back to them;
    a type it was never told is left out, so it is pushed after a reconnect."""
    states = {"Mailbox": "12", "Email": "10", "Thread": "10"}
    assert websocket.decode_push_state(websocket.encode_push_state(states)) == states
    assert websocket.decode_push_state(websocket.encode_push_state({"Email": "7"})) == {"Email": "7"}


@pytest.mark.parametrize("value", ["", "x", "1.2", "1.2.3.4", "1.-2.3", "1" * 100, 5, None])
def test_foreign_push_state_means_everything_is_news(value):
    """A pushState this server did not give (or not a string) decodes to no states:
    every type then counts as changed and is pushed at once (RFC 8887 4.3.5.2)."""
    assert websocket.decode_push_state(value) == {}


def test_metrics_text():
    """/metrics gets two gauges in the Prometheus text format."""
    text = websocket.render_metrics()
    assert "# TYPE mailserverd_jmap_websocket_connections gauge\n" in text
    assert "\nmailserverd_jmap_websocket_push_listeners 0\n" in text
