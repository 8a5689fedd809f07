"""Socket settings every protocol server applies to its connections."""

from __future__ import annotations


def set_no_delay(transport) -> None:
    """Disable Nagle's algorithm (TCP_NODELAY).

    A command's answer often goes out as several small writes (untagged
    lines, then the tagged one). With Nagle, the last write waits for the
    client to ACK the first, and clients delay ACKs by up to 40 ms: every
    such command would take 40 ms longer than the work it does.
    """
    setter = getattr(transport, "setTcpNoDelay", None)
    if setter is None:
        return
    try:
        setter(True)
    except (OSError, AttributeError):
        pass  # not a TCP socket (tests, UNIX sockets)
