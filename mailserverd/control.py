"""The control socket: mailserverctl talks to the running daemon through it.

RocksDB admits one read-write process, so while the daemon runs, commands
that write are executed inside it (as doveadm does with Dovecot). One JSON
request line per connection; JSON frames back: {"out": base64} for stdout,
{"err": text} for stderr, and a final {"exit": status}.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket

from twisted.application import service
from twisted.internet import endpoints, threads
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

log = Logger(namespace="mailserverd.control")
SOCKET_NAME = "control.sock"
MAX_REQUEST = 1024 * 1024


def socket_path(settings) -> str:
    return os.path.join(settings.server.data_dir, SOCKET_NAME)


class ControlProtocol(LineOnlyReceiver):
    MAX_LENGTH = MAX_REQUEST
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        from .cli import commands

        self.transport.pauseProducing()  # one request per connection
        try:
            request = json.loads(line)
            args = argparse.Namespace(**request["args"])
            commands.HANDLERS[(args.noun, args.verb)]
        except (ValueError, KeyError, TypeError):
            self._send({"err": "mailserverctl: malformed control request\n"})
            self._finish(2)
            return
        log.info("control: {noun} {verb}", noun=args.noun, verb=args.verb)
        factory = self.factory
        d = threads.deferToThread(commands.execute, factory.store, factory.settings, args,
                                  self._out_from_thread, self._err_from_thread)
        d.addCallback(self._done)
        d.addErrback(self._crashed)

    def _out_from_thread(self, data: bytes) -> None:
        threads.blockingCallFromThread(self.factory.reactor, self._send,
                                       {"out": base64.b64encode(data).decode("ascii")})

    def _err_from_thread(self, text: str) -> None:
        threads.blockingCallFromThread(self.factory.reactor, self._send, {"err": text})

    def _send(self, frame: dict) -> None:
        self.transport.write(json.dumps(frame).encode() + b"\n")

    def _done(self, status: int) -> None:
        self.factory.on_change()  # a password, user or alias may have changed
        self._finish(status)

    def _crashed(self, failure) -> None:
        log.failure("control command failed", failure)
        self._send({"err": f"mailserverctl: internal error: {failure.getErrorMessage()}\n"})
        self._finish(1)

    def _finish(self, status: int) -> None:
        self._send({"exit": status})
        self.transport.loseConnection()

    def lineLengthExceeded(self, line):
        self.transport.loseConnection()


class ControlService(service.Service):
    name = "control"

    def __init__(self, settings, store, on_change, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.store = store
        self.on_change = on_change
        self.reactor = reactor
        self.port = None

    def startService(self):
        super().startService()
        from twisted.internet.protocol import Factory

        path = socket_path(self.settings)
        if os.path.exists(path):
            os.unlink(path)  # stale: we hold the store lock, so no other daemon uses it
        factory = Factory.forProtocol(ControlProtocol)
        factory.noisy = False
        factory.store, factory.settings, factory.reactor = self.store, self.settings, self.reactor
        factory.on_change = self.on_change
        endpoint = endpoints.UNIXServerEndpoint(self.reactor, path, mode=0o600, wantPID=False)
        d = endpoint.listen(factory)
        d.addCallback(lambda port: setattr(self, "port", port))
        return d

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()


class DaemonNotRunning(Exception):
    pass


def run_remote(settings, args: argparse.Namespace, stdout, stderr) -> int:
    """Send one command to the running daemon; returns its exit status."""
    path = socket_path(settings)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise DaemonNotRunning(path) from None
    with sock:
        request = {key: value for key, value in vars(args).items() if key != "config"}
        sock.sendall(json.dumps({"args": request}).encode() + b"\n")
        reader = sock.makefile("rb")
        for line in reader:
            frame = json.loads(line)
            if "out" in frame:
                stdout.write(base64.b64decode(frame["out"]))
            elif "err" in frame:
                stderr.write(frame["err"])
                stderr.flush()
            elif "exit" in frame:
                stdout.flush()
                return int(frame["exit"])
    stderr.write("mailserverctl: the daemon closed the control connection early\n")
    return 1
