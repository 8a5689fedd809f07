"""The session resource's URL authority (jmap/session.base_url): taken from the
Host header only when it names this server, so a forged Host cannot point a
client (or a browser's own-origin check) elsewhere."""

from mailserverd.jmap.session import base_url


def test_configured_hostname_and_listen_address_are_taken_from_host():
    """Host naming the configured hostname or the listen address (any port) is used as is."""
    assert base_url(b"mx.example.org:8080", "mx.example.org", ("0.0.0.0", 8080)) == "http://mx.example.org:8080"
    assert base_url(b"127.0.0.1:2080", "mx.example.org", ("127.0.0.1", 2080)) == "http://127.0.0.1:2080"


def test_forged_host_falls_back_to_the_configured_name():
    """A Host naming another server gives the configured hostname and listen port."""
    assert base_url(b"evil.example:2080", "mx.example.org", ("127.0.0.1", 2080)) == "http://mx.example.org:2080"
    assert base_url(b"evil.example", "mx.example.org", ("0.0.0.0", 443), "https") == "https://mx.example.org"


def test_localhost_counts_only_when_the_connection_arrived_on_loopback():
    """bin/run's http://localhost:2080/ is this server (the connection came in on 127.0.0.1);
    "localhost" on a connection to a public address is not."""
    assert base_url(b"localhost:2080", "mx.example.org", ("127.0.0.1", 2080), "http",
                    "127.0.0.1") == "http://localhost:2080"
    assert base_url(b"localhost:80", "mx.example.org", ("0.0.0.0", 80), "http",
                    "192.0.2.10") == "http://mx.example.org"


def test_wildcard_listener_reached_by_its_address():
    """On a 0.0.0.0 listener the address the client connected to names this server."""
    assert base_url(b"192.0.2.10:8080", "mx.example.org", ("0.0.0.0", 8080), "http",
                    "192.0.2.10") == "http://192.0.2.10:8080"
    assert base_url(b"192.0.2.11:8080", "mx.example.org", ("0.0.0.0", 8080), "http",
                    "192.0.2.10") == "http://mx.example.org:8080"
