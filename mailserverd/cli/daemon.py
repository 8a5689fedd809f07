"""mailserverd: run the server in the foreground.

SIGTERM/SIGINT stop gracefully (stop accepting, finish in-flight commits,
exit 0); SIGHUP reloads the TLS certificate and key. Configuration problems
print one line naming file, section and key, and exit 1 without a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

from twisted.internet import defer, error
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from .. import config
from ..store import BlobStoreLocked, open_store
from ..tls import TLSConfig, TLSError
from .ctl import config_path

log = Logger(namespace="mailserverd")


class StartupError(Exception):
    pass


def check_data_dir(settings) -> None:
    path = settings.server.data_dir
    try:
        os.makedirs(path, mode=0o750, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StartupError(f"{settings.path}: [server] data_dir: cannot write {path}: "
                           f"{exc.strerror}") from None


def prepare(settings):
    """Everything that can fail on configuration, before the reactor runs."""
    check_data_dir(settings)
    try:
        tls_config = TLSConfig.from_settings(settings)
    except TLSError as exc:
        raise StartupError(f"{settings.path}: {exc}") from None
    try:
        store = open_store(settings)
    except BlobStoreLocked:
        raise StartupError(f"{settings.path}: [server] data_dir: {settings.server.data_dir} is in "
                           f"use by another running mailserverd") from None
    except Exception as exc:  # an unreachable database URL, a newer schema ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StartupError(f"{settings.path}: [storage]: cannot open the store: {first}") from None
    return tls_config, store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailserverd", description="Run the mail server.")
    parser.add_argument("-c", "--config", help="configuration file (default: $MAILSERVERD_CONF, "
                        "then /etc/mailserverd/mailserverd.conf)")
    args = parser.parse_args(argv)
    try:
        settings = config.load_settings(config_path(args.config))
        tls_config, store = prepare(settings)
    except (config.ConfigError, StartupError) as exc:
        print(f"mailserverd: {exc}", file=sys.stderr)
        return 1

    from twisted.internet import reactor

    from ..service import build_service_tree, listeners

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    try:
        root = build_service_tree(settings, store, tls_config, reactor)
    except config.ConfigError as exc:  # e.g. an unknown name in [checks] chain
        print(f"mailserverd: {exc}", file=sys.stderr)
        store.close()
        return 1
    outcome = {"status": 0}

    def reload_tls(*_):
        try:
            tls_config.reload()
            log.info("SIGHUP: reloaded TLS certificate {cert}", cert=tls_config.cert_path)
        except TLSError as exc:
            log.error("SIGHUP: kept the old certificate: {reason}", reason=str(exc))

    def started(_):
        names = ", ".join(f"{s.name} {s.address[0]}:{s.address[1]}" for s in listeners(root))
        log.info("mailserverd ready: {names}", names=names or "no listeners")

    def failed(failure):
        failure = failure.value.subFailure if isinstance(failure.value, defer.FirstError) else failure
        reason = failure.value
        if isinstance(reason, error.CannotListenError):
            where = f"[listen] {_listener_for(root, reason)}"
            message = f"cannot listen on {reason.interface}:{reason.port}: {reason.socketError}"
        else:
            where, message = "[listen]", str(reason)
        print(f"mailserverd: {settings.path}: {where}: {message}", file=sys.stderr)
        outcome["status"] = 1
        reactor.stop()

    def start():
        root.startService()
        waits = [s.listening for s in listeners(root)]
        defer.DeferredList(waits, fireOnOneErrback=True, consumeErrors=True) \
            .addCallbacks(started, failed)

    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    reactor.callWhenRunning(start)
    reactor.callWhenRunning(signal.signal, signal.SIGHUP,
                            lambda *_: reactor.callFromThread(reload_tls))
    reactor.run()
    log.info("mailserverd stopped")
    return outcome["status"]


def _listener_for(root, reason) -> str:
    from ..service import listeners

    for service_ in listeners(root):
        if service_.address[1] == reason.port:
            return service_.name
    return ""


if __name__ == "__main__":
    sys.exit(main())
