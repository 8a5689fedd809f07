"""The Authentication-Results field (mailserverd/checks/authresults.py, RFC 8601) and forged-field removal."""

from __future__ import annotations

from mailserverd.checks import authresults, base
from mailserverd.checks.arc import ArcResult
from mailserverd.checks.auth import AuthResults, header_value
from mailserverd.checks.dkimverify import DkimResult
from mailserverd.checks.dmarc import DmarcResult
from mailserverd.checks.spf import SpfResult
from mailserverd.smtp.delivery import fold


def test_property_values_are_tokens_addresses_or_quoted():
    """pvalue: a token or local@domain stays as is; anything with tspecials is a quoted-string (RFC 8601 2.2)."""
    assert authresults.pvalue("example.com") == "example.com"
    assert authresults.pvalue("alice@example.com") == "alice@example.com"
    assert authresults.pvalue("ab/c+d=e") == '"ab/c+d=e"'
    assert authresults.pvalue('say "hi"\r\n') == '"say \\"hi\\""'


def test_no_methods_is_none():
    """With no results the value is "authserv-id; none" (RFC 8601 2.2)."""
    assert authresults.build_value("mx.example.test", []) == "mx.example.test; none"


def results(**changes) -> AuthResults:
    values = dict(
        spf=SpfResult("pass", "mailfrom", "alice@example.com", "example.com"),
        spf_helo=SpfResult("none", "helo", "postmaster@mail.example.com", "mail.example.com"),
        dkim=[DkimResult("pass", "example.com", "sel", "AbCd/123", "@example.com")],
        dmarc=DmarcResult("pass", "example.com", "reject", "none"),
        arc=ArcResult("none"), from_domain="example.com", aligned=True, mail_from="alice@example.com")
    values.update(changes)
    return AuthResults(**values)


def test_header_value_lists_every_method_with_its_properties():
    """One field: spf= for HELO and MAIL FROM, dkim= with header.d/i/s/b, dmarc= header.from, arc=."""
    value = header_value("mx.example.test", results())
    assert value == ("mx.example.test; spf=none smtp.helo=mail.example.com; "
                     "spf=pass smtp.mailfrom=alice@example.com; "
                     'dkim=pass header.d=example.com header.i=@example.com header.s=sel header.b="AbCd/123"; '
                     "dmarc=pass (p=reject dis=none) header.from=example.com; arc=none")
    base.Verdict.accept([("Authentication-Results", value)])  # a header a verdict may carry
    folded = fold("Authentication-Results", value)
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))


def test_null_reverse_path_reports_the_helo_result_only():
    """For MAIL FROM:<> the HELO result is the SPF answer (RFC 7208 2.4): no smtp.mailfrom entry."""
    value = header_value("mx.example.test", results(mail_from="", dkim=[]))
    assert "smtp.mailfrom" not in value and "dkim=none" in value


def test_forged_results_with_our_id_are_removed_others_kept():
    """Incoming A-R fields naming our authserv-id (any case, folded, with comments) go (RFC 8601 5)."""
    message = (b"Received: from x\r\n"
               b"Authentication-Results: mx.example.test;\r\n\tdkim=pass header.d=bank.test\r\n"
               b"Authentication-Results: other.test; spf=pass smtp.mailfrom=a@b.test\r\n"
               b"authentication-results : (forged) MX.Example.Test. ; dmarc=pass\r\n"
               b"Subject: Authentication-Results: mx.example.test; in a subject stays\r\n"
               b"\r\nAuthentication-Results: mx.example.test; in the body stays\r\n")
    cleaned = authresults.remove_own(message, "mx.example.test")
    assert cleaned == (b"Received: from x\r\n"
                       b"Authentication-Results: other.test; spf=pass smtp.mailfrom=a@b.test\r\n"
                       b"Subject: Authentication-Results: mx.example.test; in a subject stays\r\n"
                       b"\r\nAuthentication-Results: mx.example.test; in the body stays\r\n")


def test_message_without_our_results_is_returned_unchanged():
    """No A-R of ours: the very same bytes object (no copy of a large message)."""
    message = b"Authentication-Results: other.test; none\r\nSubject: x\r\n\r\nbody\r\n"
    assert authresults.remove_own(message, "mx.example.test") is message
    plain = b"Subject: x\r\n\r\nbody\r\n"
    assert authresults.remove_own(plain, "mx.example.test") is plain


def test_authserv_id_parsing():
    """The authserv-id is the first word before ";" with comments skipped (RFC 8601 2.2)."""
    assert authresults.authserv_id_of(b" (c) mx.example.test 1; none") == "mx.example.test"
    assert authresults.authserv_id_of(b"mx.example.test") == "mx.example.test"
    assert authresults.authserv_id_of(b"") == ""


def test_hostile_signature_values_still_fit_one_verdict_header():
    """Ten signatures with 1,000-character d=/s=/i= values: the field stays under the Verdict limit."""
    long = "x" * 1000 + ".test"
    dkim = [DkimResult("fail", long, long, "AAAAAAAA", "@" + long) for _ in range(10)]
    value = header_value("mx.example.test", results(dkim=dkim))
    assert len(value) < base.MAX_HEADER_VALUE
    base.Verdict.accept([("Authentication-Results", value)])
