"""SASL mechanisms PLAIN (RFC 4616) and LOGIN, as pure functions.

Protocols carry the base64 exchanges (SMTP AUTH RFC 4954, POP3 AUTH RFC 5034,
IMAP AUTHENTICATE RFC 3501 6.2.2); this module only decodes them.
"""

from __future__ import annotations

import base64
import binascii

MECHANISMS = ("PLAIN", "LOGIN")
MAX_RESPONSE = 4096  # octets of base64; longer answers are refused


class SASLError(ValueError):
    """The client's SASL data is malformed (a protocol error, not a bad password)."""


def b64decode(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    data = data.strip()
    if len(data) > MAX_RESPONSE:
        raise SASLError("response too long")
    if data == b"=":  # RFC 4954 4: "=" is an empty initial response
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError("invalid base64") from None


def decode_plain(response: bytes) -> tuple[str, str, str]:
    """RFC 4616 2: message = [authzid] NUL authcid NUL passwd.

    Returns (authzid, authcid, password) as str; raises SASLError.
    """
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise SASLError("PLAIN needs authzid NUL authcid NUL password")
    try:
        authzid, authcid, passwd = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SASLError("PLAIN fields must be UTF-8") from None
    if not authcid or not passwd:
        raise SASLError("empty user name or password")
    return authzid, authcid, passwd


def encode_challenge(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))


# LOGIN (draft-murchison-sasl-login): server asks "Username:" then "Password:".
LOGIN_USER_CHALLENGE = encode_challenge("Username:")
LOGIN_PASS_CHALLENGE = encode_challenge("Password:")


def decode_login_field(response: bytes) -> str:
    try:
        value = b64decode(response).decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError("LOGIN fields must be UTF-8") from None
    if not value or "\x00" in value:
        raise SASLError("empty or NUL-containing LOGIN field")
    return value
