"""SMTP: the inbound MX and authenticated submission (RFC 5321, 6409, 8314).

    replies.py    reply codes with RFC 3463 enhanced codes, rendered to bytes
    syntax.py     paths, domains and ESMTP parameters (RFC 5321 4.1.2)
    data.py       DATA and BDAT content readers (smuggling-safe)
    events.py     what the state machine hands its driver
    parser.py     the I/O-free ESMTP state machine
    addresses.py  relay decisions at RCPT, sender ownership
    ratelimit.py  per-IP connection counts, message rate buckets
    delivery.py   limits, From: ownership, body checks, one durable commit
    server.py     the Twisted protocol and build_factory()
"""
