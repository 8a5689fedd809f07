"""Checks on incoming mail: the staged chain (base.py) and, by name, its filters.

SPF, DKIM, DMARC, ARC, spam and virus filters plug in as Check subclasses,
either here or from other packages through the "mailserverd.checks" entry
point group.
"""

from .base import (ENTRY_POINT_GROUP, Check, CheckChain, Envelope, Recipient, Session, TLSInfo,
                   UnknownCheck, Verdict, build_chain, load_check)
from . import auth as _auth  # noqa: F401,E402  registers check.auth (SPF, DKIM, DMARC, ARC)
from . import antivirus as _antivirus  # noqa: F401,E402  registers check.antivirus

__all__ = ["ENTRY_POINT_GROUP", "Check", "CheckChain", "Envelope", "Recipient", "Session", "TLSInfo",
           "UnknownCheck", "Verdict", "build_chain", "load_check"]
