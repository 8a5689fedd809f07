"""Twisted's global reactor running in a background thread of the test process.

For tests that drive in-process Twisted code over real sockets (the outbound
transport against real SMTP servers) while the test itself blocks:

    result = run_in_reactor(transport.deliver, "remote.test", message)

The reactor starts on first use and runs until the process exits (a reactor
cannot be restarted), so every test module in a session shares it. Daemons
under test are separate processes and do not care.
"""

from __future__ import annotations

import threading

from twisted.internet import reactor

START_TIMEOUT = 10.0
_started = threading.Event()
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run() -> None:
    reactor.callWhenRunning(_started.set)
    reactor.run(installSignalHandlers=False)


def ensure_running():
    """Start the reactor thread if it is not running; returns the reactor."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="twisted-reactor", daemon=True)
            _thread.start()
    if not _started.wait(START_TIMEOUT):
        raise RuntimeError("the reactor thread did not start")
    return reactor


def run_in_reactor(function, *args, timeout: float = 30.0, **kwargs):
    """Call function in the reactor thread; wait (at most timeout) for its Deferred's result."""
    ensure_running()
    done = threading.Event()
    box: dict = {}

    def call():
        from twisted.internet import defer
        d = defer.maybeDeferred(function, *args, **kwargs)

        def finished(result):
            box["result"] = result
            done.set()
        d.addBoth(finished)

    reactor.callFromThread(call)
    if not done.wait(timeout):
        raise TimeoutError(f"{getattr(function, '__name__', function)} did not finish within {timeout} s")
    result = box["result"]
    from twisted.python.failure import Failure
    if isinstance(result, Failure):
        result.raiseException()
    return result

