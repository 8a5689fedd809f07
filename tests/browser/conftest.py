"""Fixtures for the webmail tests in a real browser: Debian's chromium driven by
Playwright for Python (never `playwright install`; bin/test installs the
chromium package and the `test` extra has playwright). Without either, every
test here skips with the reason.

Fixtures (names are stable: tests/browser/test_webmail_*.py use them):
- webmail_server (module): the real daemon with smtp, submission, imap, http and
  https (self-signed certificate) listeners, users alice@example.test and bob@example.test (password PASSWORD),
  no auth penalty; `webmail_server.address("http")` -> (host, port).
- webmail_url (module): "http://127.0.0.1:PORT" of that daemon (no trailing slash);
  webmail_https_url the same for https.
- browser (module): one headless chromium for the whole module.
- open_webmail (function): open_webmail(user=ALICE, password=PASSWORD, sign_in=True,
  viewport=None, url=webmail_url) -> Webmail, a fresh browser context (own cookies) on the webmail,
  signed in and showing the inbox unless sign_in=False. Webmail has .page (the
  Playwright Page), .console (list of (type, text) of console messages, every frame),
  .requests (list of URLs the page or any frame requested), .errors (uncaught page
  errors), .user. Contexts are closed at the end of the test.
- webmail (function): open_webmail() for alice, signed in.
- deliver (module): deliver(to=ALICE, subject=..., body=..., html=None, sender=...,
  raw=None) sends one message over SMTP to the daemon and returns its Message-ID.
- screenshot (function): screenshot(page, name) saves tests/browser/artifacts/NAME.png
  (gitignored); screenshot(page, name, readme=True) also writes docs/webmail.png when
  that file is absent (delete it to refresh the README picture).
Bounded waits: WAIT_MS (milliseconds) for anything the UI must show.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import time
import uuid
from dataclasses import dataclass, field

import pytest

from tests.support.daemon import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ALICE, BOB = "alice@example.test", "bob@example.test"
WAIT_MS = 8000
HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(HERE, "artifacts")
README_SHOT = os.path.join(HERE, "..", "..", "docs", "webmail.png")


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]' (bin/test does)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which("chromium"):
        pytest.skip("chromium is not installed: apt-get install chromium (bin/test does as root)")
    return sync_playwright


@pytest.fixture(scope="module")
def webmail_server(request, tmp_path_factory):
    """The daemon the browser talks to: smtp, submission, imap, http; no auth penalty."""
    _playwright()  # skip before starting a daemon for nothing
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "submission", "imap", "http", "https"),
               extra_config={"auth": {"penalty_initial": "0s"}})
    _stop_all(servers)


@pytest.fixture(scope="module")
def webmail_url(webmail_server):
    host, port = webmail_server.address("http")
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def webmail_https_url(webmail_server):
    host, port = webmail_server.address("https")
    return f"https://{host}:{port}"


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    manager = sync_playwright().start()
    try:
        chromium = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30000)
    except Exception as exc:  # a broken chromium install is a skip with the reason, not an error
        manager.stop()
        pytest.skip(f"chromium did not start under playwright: {exc}")
    yield chromium
    chromium.close()
    manager.stop()


@dataclass
class Webmail:
    page: object
    user: str
    console: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def sign_in(page, user: str, password: str = PASSWORD) -> None:
    page.fill("#signin-username", user)
    page.fill("#signin-password", password)
    page.click("#signin-submit")
    page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)
    page.wait_for_selector("#mailbox-list button[data-role=inbox][aria-current=true]", state="attached",
                           timeout=WAIT_MS)


@pytest.fixture
def open_webmail(browser, webmail_url):
    contexts = []

    def open_(user=ALICE, password=PASSWORD, sign_in_now=True, viewport=None, url=None, **kwargs):
        sign_in_now = kwargs.pop("sign_in", sign_in_now)
        base = url or webmail_url
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                      service_workers="block",
                                      ignore_https_errors=base.startswith("https:"))  # self-signed
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        view = Webmail(page=page, user=user)
        page.on("console", lambda message: view.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: view.errors.append(str(error)))
        context.on("request", lambda req: view.requests.append(req.url))
        page.goto(base + "/")
        page.wait_for_selector("#signin:not([hidden]), #app:not([hidden])", timeout=WAIT_MS)
        if sign_in_now:
            sign_in(page, user, password)
        return view

    yield open_
    for context in contexts:
        try:
            context.close()
        except Exception:
            pass


@pytest.fixture
def webmail(open_webmail):
    return open_webmail()


@pytest.fixture(scope="module")
def deliver(webmail_server):
    def send(to=ALICE, subject="hello", body="body text", html=None, sender="carol@remote.test",
             raw=None) -> str:
        message_id = f"<{uuid.uuid4().hex}@remote.test>"
        if raw is None:
            head = (f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
                    f"Message-ID: {message_id}\r\nDate: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                    "MIME-Version: 1.0\r\n")
            if html is None:
                raw = head + f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            else:
                raw = head + f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
        raw = raw.replace("\r\n", "\n").replace("\n", "\r\n")  # SMTP wants CRLF only (RFC 5321 2.3.8)
        with smtplib.SMTP(*webmail_server.address("smtp"), timeout=10) as smtp:
            smtp.sendmail(sender, [to], raw.encode("utf-8"))
        return message_id
    return send


@pytest.fixture
def screenshot():
    os.makedirs(ARTIFACTS, exist_ok=True)

    def shoot(page, name: str, readme: bool = False) -> str:
        path = os.path.join(ARTIFACTS, f"{name}.png")
        page.screenshot(path=path)
        if readme and not os.path.exists(README_SHOT):
            shutil.copyfile(path, README_SHOT)
        return path
    return shoot
