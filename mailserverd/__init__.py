"""mailserverd: one Twisted process serving SMTP, IMAP, POP3 and HTTP over a sharded store."""

__version__ = "0.1.0"
