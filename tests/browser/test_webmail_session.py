"""The webmail's session and push stream over time (issue 14): a session ended
elsewhere (sign-out in another tab, password change) brings the open page back
to the sign-in screen by itself; a server restart or a push stream that keeps
failing is reconnected (bounded backoff) and mail that arrived meanwhile is
shown; a signed-out page load logs no error."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.browser.conftest import ALICE, WAIT_MS, sign_in
from tests.support.daemon import PASSWORD

SESSION_END_MS = 8000  # "within a few seconds, without user action" (a loaded 2-core CI machine)


def smtp_send(server, subject, to=ALICE):
    raw = (f"From: Carol <carol@remote.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
           f"Message-ID: <{time.time_ns()}@remote.test>\r\n\r\nbody of {subject}\r\n")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        smtp.sendmail("carol@remote.test", [to], raw.encode())


def wait_stream_open(page):
    """Until the page's EventSource is open (readyState 1): state, not a sleep."""
    page.wait_for_selector("html[data-push=open]", state="attached", timeout=WAIT_MS)


def test_sign_out_in_another_tab_ends_this_one(open_webmail):
    """Signing out in a second tab of the same browser revokes the shared session;
    the server ends the first tab's push stream, whose error handler finds
    GET /auth/session answering 401 and shows the sign-in screen with a message,
    with no click in the first tab."""
    view = open_webmail()
    page = view.page
    wait_stream_open(page)
    other = page.context.new_page()
    other.goto(page.url)
    other.wait_for_selector("#app:not([hidden])")  # the same cookie: resumed, not signed in again
    other.click("#signout")
    other.wait_for_selector("#signin:not([hidden])")
    page.wait_for_selector("#signin:not([hidden])", timeout=SESSION_END_MS)
    assert "session has ended" in page.text_content("#signin-error")
    assert page.locator("#message-list li, #mailbox-list li").count() == 0
    assert page.evaluate("localStorage.getItem('webmail.signedIn')") is None


def test_password_change_ends_the_idle_page(open_webmail, webmail_server):
    """A password change (mailserverctl on the control socket) revokes the session and
    the push guard closes its stream at once: the idle page shows the sign-in screen by
    itself, and the new password signs in."""
    webmail_server.ctl("user", "add", "grace@example.test", "--password", PASSWORD)
    view = open_webmail(user="grace@example.test")
    page = view.page
    wait_stream_open(page)
    webmail_server.ctl("user", "passwd", "grace@example.test", "--password", "grace-new-pw-7")
    page.wait_for_selector("#signin:not([hidden])", timeout=SESSION_END_MS)
    assert "session has ended" in page.text_content("#signin-error")


@pytest.fixture
def own_server(request, tmp_path_factory):
    """A daemon of this test's own (it is restarted): smtp and http."""
    from tests.conftest import _make_servers, _stop_all
    make, servers = _make_servers(request, tmp_path_factory)
    yield make(listeners=("smtp", "http"), extra_config={"auth": {"penalty_initial": "0s"}})
    _stop_all(servers)


def test_server_restart_keeps_live_updates(open_webmail, own_server):
    """The daemon restarts while the inbox is open: the push stream reconnects (the
    session is durable), and a message delivered right after the restart, before the
    stream is back, appears without a reload (the reopened stream triggers a refetch),
    as does one delivered after."""
    host, port = own_server.address("http")
    view = open_webmail(url=f"http://{host}:{port}")
    page = view.page
    wait_stream_open(page)
    own_server.restart()
    smtp_send(own_server, "While reconnecting")
    page.locator("#message-list .subject", has_text="While reconnecting").wait_for(timeout=15000)
    wait_stream_open(page)
    smtp_send(own_server, "After restart")
    page.locator("#message-list .subject", has_text="After restart").wait_for(timeout=5000)
    assert page.is_hidden("#signin")


def test_failing_stream_is_reopened_with_backoff(open_webmail, deliver):
    """A push stream the server keeps refusing (503, which makes the browser give up:
    readyState CLOSED) is reopened by the client after a bounded backoff while the
    session is alive, a few attempts and not a tight loop; mail delivered during the
    outage is listed once the stream is back."""
    view = open_webmail(sign_in=False)
    page = view.page
    attempts = []

    def refuse(route):
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            route.fulfill(status=503, content_type="application/json", body='{"type":"serverUnavailable"}')
        else:
            route.continue_()

    page.route("**/jmap/eventsource*", refuse)
    sign_in(page, ALICE)
    deliver(subject="During the outage")
    page.locator("#message-list .subject", has_text="During the outage").wait_for(timeout=20000)
    assert len(attempts) >= 4, attempts
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert all(gap > 0.5 for gap in gaps[:3]), gaps  # backoff, not a tight loop
    assert page.is_hidden("#signin")


def test_signed_out_page_load_logs_no_error(open_webmail):
    """A browser that never signed in gets the sign-in screen without asking
    GET /auth/session (whose 401 Chromium would log as a console error): no console
    error, no page error."""
    view = open_webmail(sign_in=False)
    page = view.page
    page.wait_for_selector("#signin:not([hidden])")
    page.wait_for_function("document.activeElement && document.activeElement.id === 'signin-username'")
    assert not [url for url in view.requests if "/auth/session" in url]
    assert [text for kind, text in view.console if kind == "error"] == []
    assert view.errors == []
