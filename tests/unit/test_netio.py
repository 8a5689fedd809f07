"""set_no_delay (mailserverd/netio.py): TCP_NODELAY on every protocol connection,
so a reply written in pieces is not held for the client's delayed ACK."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from mailserverd.netio import set_no_delay


class RecordingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.no_delay = None

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


def test_sets_no_delay_on_tcp_transports():
    """A transport with setTcpNoDelay gets it switched on."""
    transport = RecordingTransport()
    set_no_delay(transport)
    assert transport.no_delay is True


def test_ignores_transports_without_tcp():
    """A transport that is not TCP (tests, UNIX sockets) is left alone, without error."""
    set_no_delay(StringTransport())
