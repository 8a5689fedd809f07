"""The configuration: one typed schema that validates the INI file, documents
etc/mailserverd.conf (render_reference) and says which keys reload on SIGHUP.

Errors name the file, section and key in one line (ConfigError), so the
daemon can print it and exit non-zero without a traceback.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import types
from typing import Any, Callable


class ConfigError(Exception):
    """A configuration problem; str() is the one line shown to the admin."""


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[str], Any]
    default: str  # the production default, as written in the file
    doc: str
    reloads: bool = False  # takes effect on SIGHUP without a restart
    example: str | None = None  # written in etc/mailserverd.conf when it differs from default


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'25M' -> 26214400; plain digits are bytes; 0 is allowed (unlimited where documented)."""
    match = re.fullmatch(r"\s*(\d{1,15})\s*([KMGT]?)B?\s*", text.upper())
    if not match:
        raise ValueError(f"expected a size like 25M or 1048576, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_int(text: str) -> int:
    if not re.fullmatch(r"\s*\d{1,12}\s*", text):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


def parse_seconds(text: str) -> float:
    match = re.fullmatch(r"\s*(\d{1,9}(?:\.\d+)?)\s*(s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"expected a duration like 30s, 5m, 2h or 5d, got {text!r}")
    factor = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * factor


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected yes or no, got {text!r}")


def parse_str(text: str) -> str:
    return text.strip()


def parse_hostname(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", value):
        raise ValueError(f"not a valid host name: {text!r}")
    return value


def parse_listen(text: str) -> tuple[str, int] | None:
    """'host:port' or '[v6]:port'; empty means the listener is off."""
    value = text.strip()
    if not value:
        return None
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\s]+):(\d{1,5})", value)
    if not match:
        raise ValueError(f"expected host:port, got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def parse_hostports(text: str) -> tuple[tuple[str, int], ...]:
    """'1.1.1.1, 127.0.0.1:5353' -> ((host, port), ...); port defaults to 53."""
    result = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if re.fullmatch(r"[^:\s]+", item) or item.count(":") > 1 and not item.startswith("["):
            result.append((item, 53))
        else:
            result.append(parse_listen(item))
    return tuple(result)


def parse_shards(text: str) -> int | tuple[str, ...]:
    """A count of SQLite shard files, or comma-separated SQLAlchemy URLs."""
    value = text.strip()
    if re.fullmatch(r"\d{1,4}", value):
        count = int(value)
        if not 1 <= count <= 1024:
            raise ValueError("shard count must be between 1 and 1024")
        return count
    urls = tuple(filter(None, (part.strip() for part in value.split(","))))
    for url in urls:
        if "://" not in url:
            raise ValueError(f"not a SQLAlchemy URL: {url!r}")
    return urls


def parse_names(text: str) -> tuple[str, ...]:
    """'check.hops, check.spf' -> ('check.hops', 'check.spf'); names are dotted words."""
    names = tuple(filter(None, (part.strip() for part in text.split(","))))
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)*", name):
            raise ValueError(f"not a check name: {name!r}")
    if len(set(names)) != len(names):
        raise ValueError("a check is named twice")
    return names


def parse_origins(text: str) -> tuple[str, ...]:
    """'https://mail.example.org, http://localhost:3000' -> exact origins (RFC 6454 serialisation)."""
    origins = tuple(filter(None, (part.strip().rstrip("/").lower() for part in text.split(","))))
    for origin in origins:
        if origin == "*" or not re.fullmatch(r"https?://[a-z0-9.-]+(:\d{1,5})?|https?://\[[0-9a-f:.]+\](:\d{1,5})?", origin):
            raise ValueError(f"not an origin (scheme://host[:port], no wildcard): {origin!r}")
    return origins


def parse_access_log(text: str) -> str:
    """[http] access_log: 'errors' (answers with status 400 and up) or 'all' (every request)."""
    value = text.strip().lower()
    if value not in ("errors", "all"):
        raise ValueError(f"expected errors or all, got {text!r}")
    return value


def parse_networks(text: str) -> tuple:
    """'127.0.0.0/8, ::1/128, 192.0.2.7' -> ip_network tuple (a bare address is a /32 or /128)."""
    import ipaddress
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network in CIDR notation: {item!r}") from None
    return tuple(networks)


# Free-form sections: [check.NAME] holds the options of one check (strings, as written).
CHECK_SECTION_PREFIX = "check."


# Listener names of INTERFACE.md; BUILT is the subset implemented so far.
LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https")
BUILT_LISTENERS = ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s", "http", "https")

SCHEMA: dict[str, tuple[str, list[Key]]] = {
    "server": ("Identity and where the embedded default keeps its data.", [
        Key("hostname", parse_hostname, "mx.example.org",
            "HELO/EHLO name, Received headers and banners."),
        Key("data_dir", parse_str, "/var/lib/mailserverd",
            "Everything the embedded default stores: SQLite shards, RocksDB blobs, keys, the control socket."),
    ]),
    "listen": ("host:port per listener; empty or absent = listener off. Production values shown.", [
        Key("smtp", parse_listen, "", example="0.0.0.0:25", doc="Inbound MX (RFC 5321)."),
        Key("submission", parse_listen, "", example="0.0.0.0:587", doc="Submission with STARTTLS and AUTH (RFC 6409)."),
        Key("submissions", parse_listen, "", example="0.0.0.0:465", doc="Submission over implicit TLS (RFC 8314)."),
        Key("imap", parse_listen, "", example="0.0.0.0:143", doc="IMAP with STARTTLS (RFC 3501, RFC 9051)."),
        Key("imaps", parse_listen, "", example="0.0.0.0:993", doc="IMAP over implicit TLS (RFC 8314)."),
        Key("pop3", parse_listen, "", example="0.0.0.0:110", doc="POP3 with STLS (RFC 1939, RFC 2595)."),
        Key("pop3s", parse_listen, "", example="0.0.0.0:995", doc="POP3 over implicit TLS."),
        Key("http", parse_listen, "", example="127.0.0.1:8080",
            doc="HTTP: JMAP (/.well-known/jmap, /jmap/...), GET /metrics (Prometheus text) and "
                "GET /healthz; passwords and tokens are accepted here only from loopback."),
        Key("https", parse_listen, "", example="0.0.0.0:443",
            doc="The same over implicit TLS with the [tls] certificate; passwords and tokens from anywhere."),
    ]),
    "http": ("The HTTP and HTTPS listeners: webmail, browser sessions, CORS.", [
        Key("webmail", parse_bool, "on", "Serve the webmail at / (static files from the package)."),
        Key("session_lifetime", parse_seconds, "12h",
            "How long a browser session (the webmail's sign-in cookie) lasts without use; "
            "every request renews it."),
        Key("session_max_lifetime", parse_seconds, "7d",
            "Longest a browser session lasts however much it is used; then the user signs in again."),
        Key("cors_origins", parse_origins, "", example="https://mail.example.org",
            doc="Other origins (scheme://host[:port], comma-separated) whose pages may call JMAP and "
                "/v1 with a token or Basic credentials (CORS, never with cookies); empty = none."),
        Key("access_log", parse_access_log, "errors",
            "Which HTTP requests get an access log line (combined log format): errors = answers "
            "with status 400 and up (401, 404, 413, 5xx...), all = every request (a busy JMAP "
            "client makes hundreds a second). Failed logins are logged either way (auth failed: ...)."),
    ]),
    "tls": ("Certificates; both empty = a self-signed pair generated under data_dir.", [
        Key("cert", parse_str, "", "PEM certificate chain. Reloaded on SIGHUP.", reloads=True),
        Key("key", parse_str, "", "PEM private key. Reloaded on SIGHUP.", reloads=True),
    ]),
    "storage": ("The pluggable mailbox backend.", [
        Key("directory", parse_str, "",
            "SQLAlchemy URL of the directory (domains, accounts, aliases); default: SQLite under data_dir."),
        Key("shards", parse_shards, "4",
            "Comma-separated SQLAlchemy URLs, or a count of SQLite shard files under data_dir."),
        Key("blobs", parse_str, "", "Path of the RocksDB blob store; default: data_dir/blobs."),
    ]),
    "limits": ("Limits on every input.", [
        Key("max_message_size", parse_size, "25M", "Largest message accepted (SMTP SIZE, import)."),
        Key("max_header_size", parse_size, "100K", "Largest header block (Postfix header_size_limit)."),
        Key("max_mime_depth", parse_int, "100", "Deepest MIME nesting accepted."),
        Key("max_recipients", parse_int, "100", "Recipients per SMTP transaction (452 past it)."),
        Key("max_connections_per_ip", parse_int, "20", "Concurrent connections per client IP, per listener."),
        Key("max_line_length", parse_size, "1M", "Absolute cap on any buffered protocol line."),
    ]),
    "auth": ("Authentication.", [
        Key("penalty_initial", parse_seconds, "2s",
            "Delay after the first failed login from an IP or for an account; doubles per failure."),
        Key("penalty_max", parse_seconds, "15s", "Longest failure delay (Dovecot's auth penalty)."),
        Key("cache_ttl", parse_seconds, "5m",
            "How long a verified password stays cached (argon2 verify costs ~0.1 s)."),
    ]),
    "smtp": ("SMTP inbound and submission.", [
        Key("message_rate_per_ip", parse_int, "120", "Messages per minute per client IP (450 4.7.1 past it)."),
        Key("submission_rate_per_account", parse_int, "500", "Messages per hour per authenticated account."),
        Key("trusted_networks", parse_networks, "127.0.0.0/8, ::1/128",
            "Client networks (CIDR, comma-separated) exempt from message_rate_per_ip and "
            "max_connections_per_ip, like Postfix's smtpd_client_event_limit_exceptions = $mynetworks. "
            "Empty: nobody is exempt."),
        Key("max_bad_commands", parse_int, "10", "Bad commands before the session is closed."),
        Key("timeout", parse_seconds, "5m", "Idle timeout (RFC 5321 4.5.3.2)."),
    ]),
    "pop3": ("POP3.", [
        Key("timeout", parse_seconds, "10m", "Idle timeout (RFC 1939 3: at least 10 minutes)."),
    ]),
    "imap": ("IMAP.", [
        Key("timeout", parse_seconds, "30m", "Idle timeout (RFC 3501 5.4: at least 30 minutes)."),
        Key("max_userip_connections", parse_int, "10",
            "Concurrent logged-in sessions per user and client IP (NO [LIMIT] past it; 0 = unlimited)."),
    ]),
    "checks": ("The staged checks every inbound and locally submitted message passes (docs/checks.md).", [
        Key("chain", parse_names, "check.hops, check.auth, check.antivirus, check.spam",
            "Check names, in order (built-ins, plugins/ and the mailserverd.checks entry points). "
            "A [check.NAME] section passes its keys to that check as options."),
    ]),
    "dns": ("Name resolution.", [
        Key("nameservers", parse_hostports, "", "host[:port],...; empty = the system resolver."),
    ]),
    "outbound": ("Delivery to remote hosts.", [
        Key("port", parse_int, "25", "Port used to reach remote MX hosts."),
        Key("lifetime", parse_seconds, "5d",
            "How long a message is retried (1m, 5m, 15m, 30m, 1h, 2h, then every 4h) before it bounces."),
        Key("concurrency", parse_int, "32", "Deliveries in flight at once on this node."),
        Key("max_per_destination", parse_int, "20",
            "Connections at once to one destination domain (Postfix's default_destination_concurrency_limit)."),
        Key("suppress_for", parse_seconds, "7d",
            "Submission refuses (550 5.1.1) a recipient that hard-bounced within this long; 0 = never."),
        Key("smarthost", parse_str, "", example="relay.example.net:587",
            doc="host[:port] to relay all outbound mail through instead of MX routing; empty = MX."),
        Key("smarthost_user", parse_str, "",
            "AUTH PLAIN user for the smarthost (sent only after STARTTLS); empty = no AUTH."),
        Key("smarthost_password", parse_str, "", "Password for smarthost_user."),
    ]),
}


def defaults_text() -> dict[str, dict[str, str]]:
    return {section: {key.name: key.default for key in keys} for section, (_, keys) in SCHEMA.items()}


def load_settings(path: str, overrides: dict[str, dict[str, str]] | None = None) -> types.SimpleNamespace:
    """Read and validate an INI file; returns settings.section.key, typed.

    A missing key takes the production default; an unknown section or key,
    or a malformed value, raises ConfigError naming file, section and key.
    """
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # keys are case-sensitive, as documented
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed configuration: {first_line}") from None
    raw = defaults_text()
    check_options: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        if section.startswith(CHECK_SECTION_PREFIX):
            check_options[section] = dict(parser.items(section))
            continue
        if section not in SCHEMA:
            raise ConfigError(f"{path}: [{section}]: unknown section")
        for name, value in parser.items(section):
            if name not in raw[section]:
                raise ConfigError(f"{path}: [{section}] {name}: unknown key")
            raw[section][name] = value
    for section, values in (overrides or {}).items():
        raw[section].update(values)
    settings = types.SimpleNamespace(path=os.path.abspath(path), check_options=check_options)
    for section, (_, keys) in SCHEMA.items():
        values = {}
        for key in keys:
            try:
                values[key.name] = key.parse(raw[section][key.name])
            except ValueError as exc:
                raise ConfigError(f"{path}: [{section}] {key.name}: {exc}") from None
        setattr(settings, section, types.SimpleNamespace(**values))
    _check_cross_keys(path, settings)
    return settings


def _check_cross_keys(path: str, settings: types.SimpleNamespace) -> None:
    for section in settings.check_options:
        if section not in settings.checks.chain:
            raise ConfigError(f"{path}: [{section}]: options for a check that is not in [checks] chain")
    for name in LISTENERS:
        if getattr(settings.listen, name) and name not in BUILT_LISTENERS:
            raise ConfigError(f"{path}: [listen] {name}: this listener is not built yet in "
                              f"this version; leave it empty")
    if bool(settings.tls.cert) != bool(settings.tls.key):
        missing = "key" if settings.tls.cert else "cert"
        raise ConfigError(f"{path}: [tls] {missing}: cert and key must be given together")
    if not settings.server.data_dir:
        raise ConfigError(f"{path}: [server] data_dir: must not be empty")
    if not os.path.isabs(settings.server.data_dir):
        # relative paths are relative to the file, so a checkout's config is portable
        base = os.path.dirname(os.path.abspath(path))
        settings.server.data_dir = os.path.normpath(os.path.join(base, settings.server.data_dir))


def render_reference() -> str:
    """etc/mailserverd.conf: every key, commented, production defaults."""
    lines = ["; mailserverd configuration: every key, with its production default.",
             "; Generated from mailserverd/config.py (render_reference); keep the two in step.",
             "; Unknown sections or keys stop startup. Sizes take K/M/G; durations s/m/h/d.",
             "; Keys marked (SIGHUP) reload without a restart.", ""]
    for section, (doc, keys) in SCHEMA.items():
        lines.append(f"[{section}]")
        lines.append(f"; {doc}")
        for key in keys:
            note = " (SIGHUP)" if key.reloads else ""
            lines.append(f"; {key.doc}{note}")
            value = key.default if key.example is None else key.example
            lines.append(f"{key.name} = {value}".rstrip())
        lines.append("")
    return "\n".join(lines)
