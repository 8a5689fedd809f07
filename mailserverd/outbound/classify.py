"""Bounce classification: what one recipient's outcome says about the address.

`classify(result)` answers "ok", "soft", "hard" or "complaint". The queue keeps
the three bounce kinds apart: a hard bounce suppresses the address for a
while (the mailbox or domain does not exist), a soft one does not (the
failure was about this message, this moment or our side), and a complaint
means the receiving side refused the mail as unwanted (spam, policy), which
says nothing about the address but a lot about what we send.

Rules, first match wins (RFC 3463 enhanced codes; the basic reply code only
when the server gave none):

| outcome                                                   | kind      |
|-----------------------------------------------------------|-----------|
| status "delivered"                                        | ok        |
| status "deferred" (4xx, no connection, DNS trouble)       | soft      |
| failed, enhanced class 2 or 4 (e.g. 4.4.7 expired)        | soft      |
| 5.1.7, 5.1.8 (our sender address is bad)                  | soft      |
| 5.1.x otherwise (no such mailbox, domain, null MX 5.1.10) | hard      |
| 5.2.1 mailbox disabled                                    | hard      |
| 5.4.4 unable to route                                     | hard      |
| 5.7.1 delivery not authorized, message refused            | complaint |
| 5.7.x whose text speaks of spam, abuse, block lists       | complaint |
| other 5.x.x (mailbox full, too big, content, protocol)    | soft      |
| no enhanced code, text speaks of spam, abuse, block lists | complaint |
| no enhanced code, 550/551/553 saying the user is unknown  | hard      |
| no enhanced code, 556 (RFC 7504 domain takes no mail)     | hard      |
| anything else                                             | soft      |

When in doubt the answer is soft: wrongly suppressing a live address loses
mail, wrongly retrying a dead one costs one more bounce.
"""

from __future__ import annotations

import re

OK, SOFT, HARD, COMPLAINT = "ok", "soft", "hard", "complaint"

# RFC 3463 3.2 (address status) and 3.3 (mailbox status), 3.5 (routing)
_SENDER_ADDRESS = ("5.1.7", "5.1.8")  # about our MAIL FROM, not the recipient
_HARD_EXACT = ("5.2.1", "5.4.4")
_REFUSED = "5.7.1"  # RFC 3463 3.8: "delivery not authorized, message refused"
_HARD_BASIC_CODES = (550, 551, 553)  # RFC 5321 4.2.2: mailbox unavailable / not local / name not allowed
_DOMAIN_NO_MAIL = 556  # RFC 7504 3 (and RFC 7505 null MX)
MAX_SCANNED_TEXT = 1000  # characters of a reply read by the patterns

_UNWANTED = re.compile(
    r"spam|junk|abuse|unsolicited|phish|blacklist|blocklist|block list|black list|denylist|"
    r"\brbl\b|dnsbl|spamhaus|reputation|listed (?:at|in|on|by)|blocked|complain", re.IGNORECASE)
_UNKNOWN_USER = re.compile(
    r"unknown (?:user|recipient|mailbox|address)|no such (?:user|mailbox|recipient|address)|"
    r"user unknown|recipient unknown|(?:mailbox|user|address|recipient) (?:does not|doesn't) exist|"
    r"invalid (?:recipient|mailbox|address|user)|(?:mailbox|recipient) not found|"
    r"(?:mailbox|user) unavailable|not a valid (?:mailbox|recipient|user)", re.IGNORECASE)
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def classify(result) -> str:
    """"ok", "soft", "hard" or "complaint" for one RecipientResult (see the table above)."""
    if result.status == "delivered":
        return OK
    if result.status != "failed":
        return SOFT
    enhanced = (result.enhanced or "").strip()
    text = (result.text or "")[:MAX_SCANNED_TEXT]
    if _ENHANCED.fullmatch(enhanced):
        return _by_enhanced(enhanced, text)
    return _by_basic(result.code, text)


def _by_enhanced(enhanced: str, text: str) -> str:
    klass, subject, _detail = enhanced.split(".")
    if klass != "5":  # RFC 3463 3.1: only a permanent failure says anything lasting
        return SOFT
    if enhanced in _SENDER_ADDRESS:
        return SOFT
    if subject == "1" or enhanced in _HARD_EXACT:
        return HARD
    if enhanced == _REFUSED or (subject == "7" and _UNWANTED.search(text)):
        return COMPLAINT
    return SOFT


def _by_basic(code: int, text: str) -> str:
    if not 500 <= code <= 599:
        return SOFT
    if _UNWANTED.search(text):
        return COMPLAINT
    if code == _DOMAIN_NO_MAIL or (code in _HARD_BASIC_CODES and _UNKNOWN_USER.search(text)):
        return HARD
    return SOFT
