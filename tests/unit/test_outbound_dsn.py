"""outbound/dsn.py and outbound/classify.py: RFC 3464 reports parsed back with Python's
email package (structure, per-message and per-recipient fields, RET, RFC 6533 forms, line
limits), RFC 3461 NOTIFY decisions, and the bounce classification table."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re

import pytest
from hypothesis import given, settings, strategies as st

from mailserverd.outbound.classify import classify
from mailserverd.outbound.dsn import MAX_RETURNED_MESSAGE, build_dsn, should_notify
from mailserverd.outbound.types import RecipientResult

T0 = 1_800_000_000.0
ORIGINAL = (b"From: Alice <alice@a.test>\r\nTo: bob@b.test\r\nSubject: lunch\r\n"
            b"Message-ID: <lunch-1@a.test>\r\nDate: Fri, 15 Jan 2027 08:00:00 +0000\r\n\r\n"
            b"Shall we meet at noon?\r\n")


def failed(recipient="bob@b.test", code=550, enhanced="5.1.1", text="no such user", host="mx1.b.test",
           ip="127.0.0.3", status="failed"):
    return RecipientResult(recipient=recipient, status=status, code=code, enhanced=enhanced, text=text,
                           remote_host=host, remote_ip=ip)


def dsn(results=None, original=ORIGINAL, ret=None, envid=None, orcpts=None, sender="alice@a.test",
        delayed=False) -> bytes:
    return build_dsn(reporting_mta="mx.a.test", original=original, sender=sender,
                     results=results or [failed()], queued_at=T0, now=T0 + 90, ret=ret, envid=envid,
                     orcpts=orcpts or {}, delayed=delayed)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def report_blocks(data: bytes) -> list:
    """The delivery-status part's blocks: [per-message, per-recipient...] as Messages. (The
    email package splits only message/delivery-status; the RFC 6533 form is split here.)"""
    status = parse(data).get_payload()[1]
    if status.get_content_type() == "message/delivery-status":
        return status.get_payload()
    assert status.get_content_type() == "message/global-delivery-status"
    boundary = parse(data).get_boundary().encode()
    raw = data.split(b"--" + boundary)[2].split(b"\r\n\r\n", 1)[1]
    return [email.message_from_bytes(block + b"\r\n", policy=email.policy.default)
            for block in raw.split(b"\r\n\r\n") if block.strip()]


# -- structure -------------------------------------------------------------------------------

def test_dsn_is_a_multipart_report_of_three_parts():
    """The DSN is multipart/report; report-type=delivery-status with a text part, the
    delivery-status part and the returned headers, in that order (RFC 6522 3, RFC 3464 2)."""
    message = parse(dsn())
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert [part.get_content_type() for part in message.get_payload()] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert not message.defects and all(not part.defects for part in message.walk())


def test_dsn_headers_name_the_mailer_daemon_and_are_auto_replied():
    """From is "Mail Delivery System" <MAILER-DAEMON@host>, To the sender, Auto-Submitted:
    auto-replied (RFC 3834 5), with a Subject, a Date, a Message-ID and MIME-Version."""
    message = parse(dsn())
    assert email.utils.parseaddr(message["From"]) == ("Mail Delivery System", "MAILER-DAEMON@mx.a.test")
    assert message["To"].addresses[0].addr_spec == "alice@a.test"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Subject"] == "Undelivered Mail Returned to Sender" and message["MIME-Version"] == "1.0"
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == T0 + 90
    assert re.fullmatch(r"<[0-9a-f]+\.\d+@mx\.a\.test>", message["Message-ID"])


def test_each_dsn_has_a_fresh_message_id():
    """Two DSNs for the same failure have different Message-IDs."""
    assert parse(dsn())["Message-ID"] != parse(dsn())["Message-ID"]


def test_dsn_refers_to_the_original_message_id():
    """In-Reply-To and References carry the original's Message-ID, so mail clients thread it."""
    message = parse(dsn())
    assert message["In-Reply-To"] == message["References"] == "<lunch-1@a.test>"


def test_every_line_ends_with_crlf_and_stays_short():
    """No bare LF or CR anywhere, and no line over 998 octets (RFC 5322 2.1.1), even with a
    long diagnostic and an original written with bare LF."""
    long_text = "x" * 3000 + " " + "word " * 400
    data = dsn([failed(text=long_text)], original=ORIGINAL.replace(b"\r\n", b"\n"), ret="FULL")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_diagnostic_with_line_breaks_cannot_inject_fields():
    """CR/LF in a remote reply text become spaces: no forged field or MIME boundary results."""
    data = dsn([failed(text="bad\r\nAction: delivered\r\n\r\n--x")])
    [_per_message, recipient] = report_blocks(data)
    assert recipient.get_all("Action") == ["failed"]
    assert "bad Action: delivered --x" in recipient["Diagnostic-Code"]


# -- the delivery-status fields ----------------------------------------------------------------

def test_per_message_fields():
    """Reporting-MTA (dns; host), Original-Envelope-Id (ENVID) and Arrival-Date (RFC 3464 2.2)."""
    per_message = report_blocks(dsn(envid="ENV-42"))[0]
    assert per_message["Reporting-MTA"] == "dns; mx.a.test"
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == T0


def test_no_envelope_id_field_without_envid():
    """Without ENVID there is no Original-Envelope-Id field."""
    assert report_blocks(dsn())[0]["Original-Envelope-Id"] is None


def test_per_recipient_fields_of_a_failure():
    """Final-Recipient rfc822, Action failed, Status 5.1.1, Remote-MTA, Diagnostic-Code smtp with
    the reply, Last-Attempt-Date (RFC 3464 2.3)."""
    [_per_message, recipient] = report_blocks(dsn())
    assert recipient["Final-Recipient"] == "rfc822;bob@b.test"
    assert (recipient["Action"], recipient["Status"]) == ("failed", "5.1.1")
    assert recipient["Remote-MTA"] == "dns; mx1.b.test"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert email.utils.parsedate_to_datetime(recipient["Last-Attempt-Date"]).timestamp() == T0 + 90
    assert recipient["Original-Recipient"] is None


def test_original_recipient_comes_from_orcpt():
    """ORCPT gives an Original-Recipient field with its address type (RFC 3464 2.3.1)."""
    [_m, recipient] = report_blocks(dsn(orcpts={"bob@b.test": "rfc822;Bob.Smith@b.test"}))
    assert recipient["Original-Recipient"] == "rfc822;Bob.Smith@b.test"


def test_one_block_per_recipient_in_order():
    """Several results give one per-recipient block each, in the order given."""
    results = [failed("x@b.test"), failed("y@b.test", code=552, enhanced="5.2.2", text="mailbox full")]
    blocks = report_blocks(dsn(results))
    assert [block["Final-Recipient"] for block in blocks[1:]] == ["rfc822;x@b.test", "rfc822;y@b.test"]
    assert blocks[2]["Status"] == "5.2.2"


def test_routing_failure_without_a_remote_host():
    """A null MX bounce (556 5.1.10, no host answered) has no Remote-MTA, and the diagnosis."""
    [_m, recipient] = report_blocks(dsn([failed(code=556, enhanced="5.1.10",
                                                text="domain b.test does not accept mail (null MX)",
                                                host="", ip="")]))
    assert recipient["Remote-MTA"] is None and recipient["Status"] == "5.1.10"
    assert recipient["Diagnostic-Code"] == "smtp; 556 5.1.10 domain b.test does not accept mail (null MX)"


def test_no_reply_diagnosis_is_our_own():
    """Without any SMTP reply (code 0) the diagnosis is typed X-mailserverd, and Status is
    derived from the outcome."""
    [_m, recipient] = report_blocks(dsn([failed(code=0, enhanced="", text="connection refused", host="")]))
    assert recipient["Diagnostic-Code"] == "X-mailserverd; connection refused"
    assert recipient["Status"] == "5.0.0"


def test_status_without_enhanced_code_follows_the_reply_class():
    """A 554 reply without an enhanced code is reported as Status 5.0.0 (RFC 3463 3.1)."""
    [_m, recipient] = report_blocks(dsn([failed(code=554, enhanced="", text="go away")]))
    assert recipient["Status"] == "5.0.0"


def test_expired_recipient_keeps_its_transient_status():
    """A recipient that expired in the queue is reported failed with 4.4.7."""
    [_m, recipient] = report_blocks(dsn([failed(code=451, enhanced="4.4.7", text="delivery time expired")]))
    assert (recipient["Action"], recipient["Status"]) == ("failed", "4.4.7")


def test_accepted_recipient_is_reported_relayed():
    """A success (NOTIFY=SUCCESS) to a remote MTA is Action relayed with Status 2.0.0 (RFC 3461
    5.2.2.3: that MTA, not us, delivers it), under a success Subject."""
    data = dsn([failed(status="delivered", code=250, enhanced="2.0.0", text="queued as 123")])
    [_m, recipient] = report_blocks(data)
    assert (recipient["Action"], recipient["Status"]) == ("relayed", "2.0.0")
    assert parse(data)["Subject"] == "Successful Mail Delivery Report"


def test_delay_report():
    """A deferred result in a delay report is Action delayed, Status 4.x.x, Subject says so."""
    data = dsn([failed(status="deferred", code=451, enhanced="4.7.1", text="greylisted")], delayed=True)
    [_m, recipient] = report_blocks(data)
    assert (recipient["Action"], recipient["Status"]) == ("delayed", "4.7.1")
    assert parse(data)["Subject"] == "Delayed Mail (still being retried)"


def test_human_part_names_recipient_host_and_reply():
    """The text part says, per recipient, which host said what."""
    text = " ".join(parse(dsn()).get_payload()[0].get_content().split())
    assert "<bob@b.test>: failed; host mx1.b.test [127.0.0.3] said: 550 5.1.1 no such user" in text
    assert "mx.a.test" in text


# -- the returned original (RFC 3461 4.3 RET) --------------------------------------------------

def test_default_returns_headers_only():
    """Without RET the original's header block is returned as text/rfc822-headers, no body."""
    returned = parse(dsn()).get_payload()[2]
    content = returned.get_payload(decode=True)
    assert content.startswith(b"From: Alice <alice@a.test>\r\n") and b"Subject: lunch" in content
    assert b"noon" not in content


def test_ret_full_returns_the_whole_message():
    """RET=FULL returns the original as message/rfc822, body included."""
    returned = parse(dsn(ret="FULL")).get_payload()[2]
    assert returned.get_content_type() == "message/rfc822"
    [inner] = returned.get_payload()
    assert inner["Subject"] == "lunch" and inner.get_content().strip() == "Shall we meet at noon?"


def test_ret_full_over_the_limit_returns_headers_and_says_so():
    """A RET=FULL original above the size limit comes back as headers only, and the text says why."""
    big = ORIGINAL + (b"y" * 70 + b"\r\n") * (MAX_RETURNED_MESSAGE // 72 + 1)
    message = parse(dsn(original=big, ret="FULL"))
    assert message.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert "only its headers" in message.get_payload()[0].get_content()
    assert len(dsn(original=big, ret="FULL")) < 10_000


def test_eight_bit_original_is_returned_with_8bit_encoding():
    """An 8-bit body returned in full is declared Content-Transfer-Encoding 8bit (RFC 2046 5.2.1
    forbids base64 for message/rfc822)."""
    original = ORIGINAL.replace(b"noon?", "midi à l'école ?".encode())
    returned = parse(dsn(original=original, ret="FULL")).get_payload()[2]
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert "école".encode() in dsn(original=original, ret="FULL")


def test_internationalized_addresses_use_the_global_forms():
    """A UTF-8 recipient makes the report message/global-delivery-status with utf-8 address
    types, and UTF-8 headers come back as message/global-headers (RFC 6533 3, 6.1, 6.3)."""
    original = "From: José <josé@a.test>\r\nTo: bücher@b.test\r\nSubject: ü\r\n\r\nhi\r\n".encode()
    data = dsn([failed(recipient="bücher@b.test")], original=original, sender="josé@a.test")
    message = parse(data)
    assert [part.get_content_type() for part in message.get_payload()][1:] == [
        "message/global-delivery-status", "message/global-headers"]
    assert "Final-Recipient: utf-8;bücher@b.test".encode() in data


def test_original_without_body_is_returned():
    """An original with no blank line (headers only) is still returned whole as its headers."""
    original = b"From: alice@a.test\r\nSubject: no body\r\n"
    content = parse(dsn(original=original)).get_payload()[2].get_payload(decode=True)
    assert content == original


def test_null_sender_gets_no_dsn():
    """build_dsn refuses the null reverse-path: a DSN is never sent to <> (RFC 3464 2)."""
    with pytest.raises(ValueError):
        dsn(sender="")


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300), recipient=st.text(min_size=1, max_size=60), envid=st.text(max_size=60),
       code=st.integers(0, 599))
def test_arbitrary_results_always_give_a_parseable_report(text, recipient, envid, code):
    """Whatever the reply text, address or envelope id, the DSN parses with no defects, has one
    per-recipient block, and keeps CRLF lines under 998 octets."""
    data = dsn([failed(recipient=recipient, text=text, code=code, enhanced="")], envid=envid or None)
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    message = parse(data)
    assert [part.get_content_type() for part in message.get_payload()][0] == "text/plain"
    assert len(report_blocks(data)) == 2


# -- RFC 3461 4.1 NOTIFY ---------------------------------------------------------------------

@pytest.mark.parametrize("notify, status, expected", [
    (None, "failed", True), (None, "delivered", False), (None, "deferred", False),
    ("NEVER", "failed", False), ("FAILURE", "failed", True), ("FAILURE", "delivered", False),
    ("SUCCESS", "delivered", True), ("SUCCESS", "failed", False), ("SUCCESS,FAILURE", "failed", True),
    ("SUCCESS,FAILURE", "delivered", True), ("DELAY", "deferred", True), ("DELAY", "delayed", True),
    ("FAILURE,DELAY", "deferred", True), ("success,failure", "delivered", True), ("", "failed", True),
    ("FAILURE", "unknown", False),
])
def test_should_notify(notify, status, expected):
    """NOTIFY decides per outcome; none means FAILURE only; NEVER means no DSN at all."""
    assert should_notify(notify, status) is expected


# -- classification ---------------------------------------------------------------------------

@pytest.mark.parametrize("status, code, enhanced, text, kind", [
    ("delivered", 250, "2.0.0", "ok", "ok"),
    ("deferred", 451, "4.7.1", "greylisted", "soft"),
    ("deferred", 0, "", "connection refused", "soft"),
    ("failed", 550, "5.1.1", "no such user", "hard"),
    ("failed", 550, "5.1.2", "domain does not exist", "hard"),
    ("failed", 556, "5.1.10", "null MX", "hard"),
    ("failed", 550, "5.2.1", "mailbox disabled", "hard"),
    ("failed", 554, "5.4.4", "unable to route", "hard"),
    ("failed", 553, "5.1.7", "bad sender address", "soft"),
    ("failed", 552, "5.2.2", "mailbox full", "soft"),
    ("failed", 552, "5.3.4", "message too big", "soft"),
    ("failed", 554, "5.6.0", "bad content", "soft"),
    ("failed", 550, "5.7.1", "message refused", "complaint"),
    ("failed", 550, "5.7.26", "DMARC policy", "soft"),
    ("failed", 554, "5.7.0", "listed at spamhaus", "complaint"),
    ("failed", 451, "4.4.7", "delivery time expired", "soft"),
    ("failed", 550, "", "User unknown", "hard"),
    ("failed", 550, "", "Message rejected as spam", "complaint"),
    ("failed", 556, "", "no mail here", "hard"),
    ("failed", 554, "", "transaction failed", "soft"),
    ("failed", 0, "", "no answer", "soft"),
])
def test_classify(status, code, enhanced, text, kind):
    """The documented rule table: delivered ok, deferred soft, address failures hard, refusals
    as unwanted complaint, everything else soft."""
    assert classify(failed(status=status, code=code, enhanced=enhanced, text=text)) == kind
