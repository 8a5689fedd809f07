"""[smtp] trusted_networks: which clients the per-IP limits exempt (Postfix
smtpd_client_event_limit_exceptions = $mynetworks), with an injected clock."""

from __future__ import annotations

import ipaddress

import pytest
from twisted.internet import task

from mailserverd import config
from mailserverd.smtp.ratelimit import ConnectionLimiter, RateLimiter, TrustedNetworks


def test_default_trusts_loopback_only(tmp_path):
    """The default trusted_networks is 127.0.0.0/8 and ::1: loopback in, everything else out."""
    path = tmp_path / "m.conf"
    path.write_text("[server]\nhostname = mx.local.test\ndata_dir = d\n")
    trusted = TrustedNetworks(config.load_settings(str(path)).smtp.trusted_networks)
    assert "127.0.0.1" in trusted and "127.5.6.7" in trusted and "::1" in trusted
    assert "::ffff:127.0.0.1" in trusted  # IPv4-mapped on a dual-stack socket
    assert "192.0.2.9" not in trusted and "2001:db8::1" not in trusted
    assert "unknown" not in trusted and "" not in trusted


def test_parse_networks_accepts_cidr_lists_and_refuses_junk():
    """A comma list of CIDR blocks or bare addresses parses; anything else is a precise error."""
    assert config.parse_networks("10.0.0.0/8, 192.0.2.7 ,2001:db8::/32") == (
        ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"))
    assert config.parse_networks("") == ()
    with pytest.raises(ValueError, match="CIDR"):
        config.parse_networks("10.0.0.0/33")
    with pytest.raises(ValueError, match="CIDR"):
        config.parse_networks("mx.example.org")


def test_trusted_ip_is_exempt_from_the_message_rate_others_are_not():
    """Within one minute a trusted IP passes 640 events; an untrusted one gets `rate`, then refusals
    until the clock refills its bucket."""
    clock = task.Clock()
    limiter = RateLimiter(rate=120, period=60.0, clock=clock,
                          trusted=TrustedNetworks(["127.0.0.0/8", "192.0.2.0/28"]))
    assert all(limiter.allow("127.0.0.1") for _ in range(640))
    assert all(limiter.allow("192.0.2.5") for _ in range(640))
    outsider = [limiter.allow("198.51.100.1") for _ in range(121)]
    assert outsider == [True] * 120 + [False]
    clock.advance(0.5)  # 120 a minute: one token back every 0.5 s
    assert limiter.allow("198.51.100.1") and not limiter.allow("198.51.100.1")
    assert "127.0.0.1" not in limiter._buckets  # trusted clients take no memory


def test_trusted_ip_is_exempt_from_the_connection_limit():
    """A trusted IP opens more than the per-IP limit; an untrusted one stops at it; release balances."""
    limiter = ConnectionLimiter(2, TrustedNetworks(["::1/128", "127.0.0.0/8"]))
    assert all(limiter.acquire("127.0.0.1") for _ in range(16))
    assert limiter.acquire("::1") and limiter.acquire("::1") and limiter.acquire("::1")
    assert limiter.acquire("203.0.113.4") and limiter.acquire("203.0.113.4")
    assert not limiter.acquire("203.0.113.4")
    for _ in range(16):
        limiter.release("127.0.0.1")
    assert limiter.count("127.0.0.1") == 0


def test_empty_trusted_networks_exempts_nobody():
    """trusted_networks = (empty): loopback is limited like anyone else."""
    limiter = RateLimiter(rate=2, period=60.0, clock=task.Clock(), trusted=TrustedNetworks(()))
    assert [limiter.allow("127.0.0.1") for _ in range(3)] == [True, True, False]
