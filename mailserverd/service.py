"""The service tree: one root MultiService; the store, the outbound queue
runner, the control socket and one service per configured listener are its
children (twisted.application)."""

from __future__ import annotations

import importlib

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from .auth import build_authenticator
from .store.service import AsyncStore

log = Logger(namespace="mailserverd")

# listener name -> (protocol module, mode, implicit TLS)
LISTENER_PROTOCOLS = {
    "smtp": ("mailserverd.smtp.server", "smtp", False),
    "submission": ("mailserverd.smtp.server", "submission", False),
    "submissions": ("mailserverd.smtp.server", "submissions", True),
    "pop3": ("mailserverd.pop3.server", "pop3", False),
    "pop3s": ("mailserverd.pop3.server", "pop3s", True),
    "imap": ("mailserverd.imap.server", "imap", False),
    "imaps": ("mailserverd.imap.server", "imaps", True),
    "http": ("mailserverd.http.server", "http", False),
    "https": ("mailserverd.http.server", "https", True),
}
# Listener modules whose build_factory takes the OutboundService (outbound=...).
OUTBOUND_USERS = ("mailserverd.smtp.server", "mailserverd.http.server")


class ListenerService(service.Service):
    """Listens on one endpoint; `listening` fires when bound or fails with the reason."""

    def __init__(self, name: str, address: tuple[str, int], endpoint, factory):
        self.name = name
        self.address = address
        self.endpoint = endpoint
        self.factory = factory
        self.port = None
        self.listening: defer.Deferred | None = None

    def startService(self):
        super().startService()
        self.listening = self.endpoint.listen(self.factory)
        self.listening.addCallback(self._bound)

    def _bound(self, port):
        self.port = port
        host, number = self.address
        log.info("listening: {name} on {host}:{port}", name=self.name, host=host, port=number)
        return port

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()


def make_endpoint(reactor, address: tuple[str, int], tls_config, implicit_tls: bool):
    host, port = address
    if implicit_tls:
        return endpoints.SSL4ServerEndpoint(reactor, port, tls_config.server_context_factory(),
                                            interface=host, backlog=128)
    if ":" in host:
        return endpoints.TCP6ServerEndpoint(reactor, port, interface=host, backlog=128)
    return endpoints.TCP4ServerEndpoint(reactor, port, interface=host, backlog=128)


def build_service_tree(settings, store, tls_config, reactor) -> service.MultiService:
    """Root service: AsyncStore, OutboundService, control socket, one ListenerService per listener."""
    from .control import ControlService
    from .outbound.worker import OutboundService
    from .spam.learn import build_learner

    root = service.MultiService()
    async_store = AsyncStore(store, reactor)
    async_store.setServiceParent(root)
    authenticator = build_authenticator(async_store, settings, reactor)
    root.authenticator = authenticator
    root.async_store = async_store
    root.search = __import__("mailserverd.search.indexer", fromlist=["x"]).SearchService(
        store, settings.server.data_dir, async_store)
    root.search.setServiceParent(root)  # full-text indexer (issue 12), stopped before the store
    outbound = OutboundService(settings, store.directory_engine, async_store, reactor)
    outbound.setServiceParent(root)  # started after the store, stopped before it
    root.outbound = outbound

    checks = build_checks(settings, async_store, reactor)
    root.checks = checks
    from .vacation import VacationResponder
    responder = VacationResponder(async_store, outbound, reactor)  # RFC 8621 8 / RFC 3834
    root.spam_learner = build_learner(root, checks, async_store, settings)  # Junk moves train check.spam

    def directory_changed():
        authenticator.forget_cached()
        async_store.forget_directory_cache()
        outbound.wake()  # a `queue retry` or `queue flush` may have made mail due
    ControlService(settings, store, directory_changed).setServiceParent(root)
    for name, (module_name, mode, implicit_tls) in LISTENER_PROTOCOLS.items():
        address = getattr(settings.listen, name)
        if not address:
            continue
        module = importlib.import_module(module_name)
        extra = {"outbound": outbound} if module_name in OUTBOUND_USERS else {}
        if module_name in OUTBOUND_USERS:  # SMTP, and JMAP EmailSubmission (http)
            extra["checks"] = checks
            extra["responder"] = responder  # vacation replies after local delivery
        factory = module.build_factory(mode, settings, async_store, authenticator, tls_config, **extra)
        factory.noisy = False  # ListenerService logs one line per listener instead
        endpoint = make_endpoint(reactor, address, tls_config, implicit_tls)
        ListenerService(name, address, endpoint, factory).setServiceParent(root)
    return root


def build_checks(settings, async_store, reactor):
    """The check chain of [checks] chain, each check with its [check.NAME] options.

    An unknown name or bad options stop start-up with one line (ConfigError).
    """
    from .checks.base import CheckContext, UnknownCheck, build_chain
    from .config import ConfigError

    context = CheckContext(settings=settings, store=async_store, reactor=reactor, clock=reactor)
    try:
        return build_chain(settings.checks.chain, settings.check_options, context)
    except UnknownCheck as exc:
        raise ConfigError(f"{settings.path}: [checks] chain: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{settings.path}: [checks] chain: {exc}") from None


def listeners(root: service.MultiService) -> list[ListenerService]:
    return [child for child in root if isinstance(child, ListenerService)]
