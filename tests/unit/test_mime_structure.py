"""The non-recursive MIME scanner (mailserverd.mime.structure.iter_parts)."""

from __future__ import annotations

from mailserverd.mime.structure import iter_parts

NESTED = (b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
          b"preamble\r\n"
          b"--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
          b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
          b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
          b"--YY\r\n\r\nplain\r\n"
          b"--YY\r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n"
          b"--YY--\r\n"
          b"\r\n--XX--\r\nepilogue\r\n")


def bodies(raw):
    return [(part.content_type, part.depth, raw[part.body_start:part.body_end])
            for part in iter_parts(raw)]


def test_single_part_message_is_one_entity():
    """A message without MIME structure is one text/plain entity at depth 0."""
    raw = b"Subject: x\r\n\r\nhello\r\n"
    assert bodies(raw) == [("text/plain", 0, b"hello\r\n")]


def test_nested_structure_in_document_order():
    """Leaves come in document order, containers after their contents, with depths."""
    assert [(t, d) for t, d, _ in bodies(NESTED)] == [
        ("text/plain", 1), ("text/plain", 3), ("text/html", 3), ("multipart/alternative", 2),
        ("message/rfc822", 1), ("multipart/mixed", 0)]


def test_line_break_before_delimiter_is_not_body():
    """The CRLF before a boundary line belongs to the delimiter (RFC 2046 5.1.1)."""
    found = bodies(NESTED)
    assert found[0][2] == b"hello"
    assert found[2][2] == b"<b>x</b>"


def test_ancestors_name_enclosing_types():
    """Each part knows the types of the entities around it, outermost first."""
    html = [part for part in iter_parts(NESTED) if part.content_type == "text/html"][0]
    assert html.ancestors == ("multipart/mixed", "message/rfc822", "multipart/alternative")


def test_part_without_header_defaults_to_text_plain():
    """A part starting with the empty line has no fields: text/plain, 7bit."""
    parts = list(iter_parts(NESTED))
    assert parts[1].content_type == "text/plain" and parts[1].transfer_encoding == "7bit"


def test_missing_close_delimiter_ends_at_end_of_message():
    """An unterminated multipart still yields its parts; the last runs to the end."""
    raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\none\r\n--B\r\n\r\ntwo\r\n"
    assert bodies(raw)[:2] == [("text/plain", 1, b"one"), ("text/plain", 1, b"two\r\n")]


def test_outer_delimiter_ends_unterminated_inner_multipart():
    """A delimiter of an outer multipart closes an inner one left open."""
    raw = (b"Content-Type: multipart/mixed; boundary=OUT\r\n\r\n"
           b"--OUT\r\nContent-Type: multipart/alternative; boundary=IN\r\n\r\n"
           b"--IN\r\n\r\ninner\r\n"
           b"--OUT\r\n\r\nafter\r\n--OUT--\r\n")
    assert [(t, d, b) for t, d, b in bodies(raw) if not t.startswith("multipart")] == [
        ("text/plain", 2, b"inner"), ("text/plain", 1, b"after")]


def test_boundary_with_transport_padding_and_lf_ends():
    """Delimiters may carry trailing white space; LF-only messages work too."""
    raw = b"Content-Type: multipart/mixed; boundary=\"b d\"\n\n--b d  \n\none\n--b d-- \n"
    assert bodies(raw)[0] == ("text/plain", 1, b"one")


def test_bare_cr_line_ends_are_followed():
    """Bare-CR line ends count, as in the email package, so depth cannot hide behind them."""
    raw = b"Content-Type: multipart/mixed; boundary=B\r\r--B\rContent-Type: text/html\r\rx\r--B--\r"
    assert bodies(raw)[0] == ("text/html", 1, b"x")


def test_digest_parts_default_to_message_rfc822():
    """Inside multipart/digest a part without Content-Type is a message (RFC 2046 5.1.5)."""
    raw = (b"Content-Type: multipart/digest; boundary=D\r\n\r\n"
           b"--D\r\n\r\nSubject: one\r\n\r\nfirst\r\n--D--\r\n")
    types = [(t, d) for t, d, _ in bodies(raw)]
    assert ("message/rfc822", 1) in types and ("text/plain", 2) in types


def test_delivery_status_is_not_parsed_as_a_message():
    """message/delivery-status holds header blocks (RFC 3464), not a nested message."""
    raw = (b"Content-Type: multipart/report; boundary=R\r\n\r\n"
           b"--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n--R--\r\n")
    assert [(t, d) for t, d, _ in bodies(raw)] == [("message/delivery-status", 1),
                                                   ("multipart/report", 0)]


def test_delimiter_right_after_part_header_gives_empty_body():
    """A boundary line directly after a part's fields ends the part with an empty body."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n--B\r\n\r\nsecond\r\n--B--\r\n")
    assert bodies(raw)[:2] == [("text/plain", 1, b""), ("text/plain", 1, b"second")]


def test_body_line_that_is_not_a_field_starts_the_body():
    """A part whose first line is not a header field has its body start there."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nplain words, no header\r\n--B--\r\n")
    assert bodies(raw)[0] == ("text/plain", 1, b"plain words, no header")


def test_dashes_that_are_not_delimiters_stay_in_the_body():
    """Lines starting with "--" that are not this multipart's boundary are content."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\n\r\n-- \r\nsignature\r\n--Bx\r\n--B--\r\n")
    assert bodies(raw)[0] == ("text/plain", 1, b"-- \r\nsignature\r\n--Bx")


def test_parameters_and_disposition_are_read():
    """A part's Content-Type parameters, disposition and transfer encoding are exposed."""
    raw = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: application/pdf; name=a.pdf\r\n"
           b"Content-Disposition: attachment;\r\n filename=\"a.pdf\"\r\n"
           b"Content-Transfer-Encoding: BASE64\r\n\r\nAAAA\r\n--B--\r\n")
    part = next(iter_parts(raw))
    assert (part.content_type, part.params, part.disposition, part.disposition_params,
            part.transfer_encoding) == ("application/pdf", {"name": "a.pdf"}, "attachment",
                                        {"filename": "a.pdf"}, "base64")
