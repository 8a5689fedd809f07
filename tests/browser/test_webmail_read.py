"""The webmail in headless chromium against the real daemon: sign-in, live
updates over EventSource, reading, search, moving to Junk, HTML mail that can
neither run script nor fetch anything, sign-out (issue 14)."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.conftest import ALICE, sign_in
from tests.support.daemon import PASSWORD


def http_get(server, path, headers=None):
    connection = http.client.HTTPConnection(*server.address("http"), timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def open_row(page, subject):
    """Click the message-list row whose subject is `subject`; wait for the reader."""
    row = page.locator("#message-list li", has=page.locator(".subject", has_text=subject))
    row.first.click()
    page.wait_for_selector("#reader:not([hidden]) #reader-subject")
    return row


def test_static_files_carry_strict_headers(webmail_server):
    """/ is index.html and /webmail/<file> the modules, with a CSP that allows no
    inline or foreign script, framing denied, nosniff, no referrer, the right
    content types and an ETag that answers 304; unknown names and traversal are 404."""
    status, headers, body = http_get(webmail_server, "/")
    assert status == 200 and b'<script type="module" src="/webmail/app.js">' in body
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline' " not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "form-action 'none'" in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    status, headers, body = http_get(webmail_server, "/webmail/jmap.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"export class JMAPClient" in body
    status, again, _ = http_get(webmail_server, "/webmail/jmap.js", {"If-None-Match": headers["etag"]})
    assert status == 304
    for path in ("/webmail/../__init__.py", "/webmail/%2e%2e/__init__.py", "/webmail/__init__.py",
                 "/webmail/nothing.js", "/index.html"):
        status, _, _ = http_get(webmail_server, path)
        assert status == 404, path


def test_sign_in_shows_folders_and_rejects_a_wrong_password(open_webmail, screenshot):
    """A wrong password keeps the sign-in screen with an error (no Basic dialog);
    the right one shows the folders with special-use roles, inbox first."""
    view = open_webmail(sign_in=False)
    page = view.page
    page.fill("#signin-username", ALICE)
    page.fill("#signin-password", "wrong")
    page.click("#signin-submit")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "Wrong address or password" in page.text_content("#signin-error")
    screenshot(page, "signin")
    sign_in(page, ALICE)
    roles = page.eval_on_selector_all("#mailbox-list button", "bs => bs.map(b => b.dataset.role)")
    assert roles[0] == "inbox" and {"sent", "trash", "junk", "drafts"} <= set(roles)
    assert page.input_value("#signin-password") == ""


def test_new_mail_appears_live_and_opens(webmail, deliver, screenshot):
    """A message delivered over SMTP while the inbox is open appears within a few
    seconds without a reload (EventSource push), marked unread with the folder's
    unread count; opening it shows the text (its URL a link opening a new tab without
    opener or referrer) and marks it read."""
    page = webmail.page
    page.wait_for_selector("html[data-push=open]", state="attached")  # the EventSource is connected
    started = time.monotonic()
    deliver(subject="Live delivery", body="Hello from SMTP.\nSecond line: https://example.org/a?b=1.")
    row = page.locator("#message-list li.unread", has=page.locator(".subject", has_text="Live delivery"))
    row.wait_for(timeout=5000)
    latency = time.monotonic() - started
    assert latency < 5, latency
    inbox = page.locator("#mailbox-list button[data-role=inbox] .count")
    assert int(inbox.text_content()) >= 1
    screenshot(page, "inbox", readme=False)
    open_row(page, "Live delivery")
    body = page.locator("#conversation article.email:not(.collapsed) pre.text")
    assert "Hello from SMTP." in body.text_content()
    link = body.locator("a")
    assert link.get_attribute("href") == "https://example.org/a?b=1"  # the final dot is the sentence's
    assert link.get_attribute("rel") == "noopener noreferrer" and link.get_attribute("target") == "_blank"
    page.wait_for_selector("#message-list li:not(.unread) .subject:has-text('Live delivery')")
    screenshot(page, "reader")


def test_search_finds_a_message(webmail, deliver):
    """The search box runs Email/query with a text filter: a word of one message's
    body finds it and not the others; clearing the search returns to the inbox."""
    deliver(subject="Quarterly report", body="The zanzibar figures are attached.")
    deliver(subject="Lunch", body="Pizza today?")
    page = webmail.page
    page.locator("#message-list .subject", has_text="Lunch").wait_for()
    page.press("body", "/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.fill("#search", "zanzibar")
    page.press("#search", "Enter")
    page.wait_for_selector("#list-title:has-text('Search: zanzibar')")
    page.locator("#message-list .subject", has_text="Quarterly report").wait_for()
    subjects = page.eval_on_selector_all("#message-list .subject", "xs => xs.map(x => x.textContent)")
    assert subjects == ["Quarterly report"]
    page.click("#mailbox-list button[data-role=inbox]")
    page.locator("#message-list .subject", has_text="Lunch").wait_for()


def test_flag_and_unread_markers(webmail, deliver):
    """Flag and Mark unread (buttons and the s shortcut) set $flagged and clear
    $seen, shown as markers in the list."""
    deliver(subject="Flag me", body="x")
    page = webmail.page
    open_row(page, "Flag me")
    # opening marks it read (Email/set after the reader shows): until that answer the
    # button says "Mark read", and a click then would mark it read, not unread
    page.wait_for_selector("#toggle-read:has-text('Mark unread')")
    page.click("#toggle-flag")
    page.wait_for_selector("#message-list li:has(.subject:has-text('Flag me')) .flag")
    page.click("#toggle-read")
    page.wait_for_selector("#message-list li.unread:has(.subject:has-text('Flag me'))")
    page.locator("#message-list").focus()
    page.keyboard.press("s")
    page.wait_for_selector("#message-list li:has(.subject:has-text('Flag me')) .flag", state="detached")


def test_attachments_listed_and_downloadable(webmail, deliver):
    """An attachment is listed under the message with its name and size and its
    link downloads the exact bytes (JMAP download URL, cookie-authenticated); an
    inline cid: image of an HTML body is shown inside the frame as a data: URL."""
    boundary = "b-attach"
    pixel = "R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="  # a 1x1 GIF
    raw = ("From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: With files\r\n"
           "MIME-Version: 1.0\r\n"
           f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n"
           f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           "<p>See the report <img id=logo src=\"cid:logo@x\" alt=logo></p>\r\n"
           f"--{boundary}\r\nContent-Type: image/gif\r\nContent-ID: <logo@x>\r\n"
           "Content-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           f"{pixel}\r\n"
           f"--{boundary}\r\nContent-Type: text/csv; name=report.csv\r\n"
           "Content-Disposition: attachment; filename=report.csv\r\n\r\n"
           "a,b\r\n1,2\r\n"
           f"--{boundary}--\r\n")
    deliver(raw=raw)
    page = webmail.page
    failed = []  # answers that were not 2xx/304, shown if the inline image never appears
    page.on("response", lambda response: response.status >= 400 and failed.append((response.status, response.url)))
    open_row(page, "With files")
    link = page.locator("#conversation .attachments a", has_text="report.csv")
    link.wait_for()
    href = link.get_attribute("href")
    assert href.startswith("/jmap/download/") and link.get_attribute("download") == "report.csv"
    data = page.evaluate("url => fetch(url, {credentials: 'same-origin'}).then(r => r.text())", href)
    if data.replace("\r\n", "\n") != "a,b\n1,2":  # show the whole stored message to tell why
        whole = re.sub(r"/(b[0-9]+)\.[0-9.]+/", r"/\1/", href)
        stored = page.evaluate("url => fetch(url, {credentials: 'same-origin'}).then(r => r.text())", whole)
        pytest.fail(f"downloaded {data!r} from {href}; the stored message:\n{stored}")
    # The reader writes the frame's document (srcdoc) once, with the image as a data: URL;
    # that document is what is pinned (when it was written twice, a loaded machine's
    # Chromium was seen still showing the first one after 8 s, in 2 of 3 full runs).
    try:
        page.wait_for_function(
            """() => [...document.querySelectorAll('#conversation iframe')].some(
                   (frame) => /<img id="logo" src="data:image\\/gif;base64,R0lGOD/.test(frame.srcdoc || ''))""")
    except Exception:
        srcdoc = page.locator("#conversation iframe").first.get_attribute("srcdoc")
        pytest.fail(f"no inline image; failed answers {failed}; frame document:\n{srcdoc}")


def test_conversation_view_groups_a_thread(webmail, deliver):
    """With Conversations on, a reply (In-Reply-To/References) joins its thread: one
    row with the count, and the reader shows both messages (and a third that arrives
    while it is open); with it off, one row per message."""
    first = deliver(subject="Trip plans", body="Shall we go to Lisbon?")
    page = webmail.page
    page.locator("#message-list .subject", has_text="Trip plans").wait_for()
    reply = ("From: Dan <dan@remote.test>\r\nTo: alice@example.test\r\nSubject: Re: Trip plans\r\n"
             f"In-Reply-To: {first}\r\nReferences: {first}\r\nMIME-Version: 1.0\r\n"
             "Content-Type: text/plain\r\n\r\nYes, in May.\r\n")
    deliver(raw=reply, sender="dan@remote.test")
    row = page.locator("#message-list li", has=page.locator(".subject", has_text="Re: Trip plans"))
    row.locator(".thread-count", has_text="(2)").wait_for()
    assert page.locator("#message-list .subject", has_text="Trip plans").count() == 1
    open_row(page, "Re: Trip plans")
    articles = page.locator("#conversation article.email")
    assert articles.count() == 2
    assert "Lisbon" in page.text_content("#conversation")
    third = ("From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: Re: Trip plans\r\n"
             f"In-Reply-To: {first}\r\nReferences: {first}\r\nMIME-Version: 1.0\r\n"
             "Content-Type: text/plain\r\n\r\nCount me in.\r\n")
    deliver(raw=third)
    page.locator("#conversation article.email").nth(2).wait_for()  # the open reader takes it in live
    assert "Count me in." in page.text_content("#conversation")
    page.uncheck("#threads-toggle")
    page.locator("#message-list .subject", has_text="Trip plans").nth(2).wait_for()
    assert page.locator("#message-list .subject", has_text="Trip plans").count() == 3


class _Pixel(BaseHTTPRequestHandler):
    hits: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Pixel.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, *args):
        pass


@pytest.fixture
def pixel_server():
    """A loopback HTTP server standing in for a tracker: it counts image requests."""
    _Pixel.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pixel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_hostile_html_runs_nothing_and_loads_nothing(webmail, deliver, pixel_server, screenshot):
    """An HTML message with a <script>, an onerror handler, a javascript: link, a
    form and a remote image (plus a CSS background) is shown in a sandboxed iframe
    with no script run (no console output, no page error, no "Blocked script"
    notice: the sanitiser removed them) and no request to the remote host until
    "Load images" is clicked; links open with rel=noopener noreferrer."""
    html = (f"<html><head><style>body {{ background: url({pixel_server}/css.gif) }}</style></head><body>"
            "<p id=visible>Hello <b>HTML</b></p>"
            "<script>console.log('XSS-script'); parent.document.title='pwned'</script>"
            f"<img src=\"{pixel_server}/track.gif\" onerror=\"console.log('XSS-onerror')\" alt=t>"
            "<img src=x onerror=\"console.log('XSS-onerror2')\">"
            "<a href=\"javascript:console.log('XSS-link')\">js</a> "
            "<a id=ext href=\"https://example.org/\">site</a>"
            "<form action=\"https://example.org/steal\"><input name=p></form>"
            "<svg onload=\"console.log('XSS-svg')\"></svg>"
            "<iframe src=\"https://example.org/\"></iframe></body></html>")
    deliver(subject="Hostile HTML", html=html)
    page = webmail.page
    open_row(page, "Hostile HTML")
    frame_element = page.wait_for_selector("#conversation iframe")
    assert frame_element.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    frame = frame_element.content_frame()
    frame.wait_for_selector("#visible")
    page.wait_for_selector(".images-blocked:not([hidden])")
    page.wait_for_timeout(500)
    source = frame.content()
    for banned in ("<script", "onerror", "javascript:", "<form", "<input", "<svg", "<iframe", pixel_server):
        assert banned not in source, banned
    assert frame.get_attribute("#ext", "rel") == "noopener noreferrer"
    assert frame.get_attribute("#ext", "target") == "_blank"
    screenshot(page, "html-blocked")
    assert not [text for _, text in webmail.console if "XSS" in text or "Blocked script" in text], webmail.console
    assert webmail.errors == []
    assert page.title() != "pwned"
    assert _Pixel.hits == [] and not [url for url in webmail.requests if url.startswith(pixel_server)]
    page.click(".images-blocked button")
    deadline = time.monotonic() + 5
    while "/track.gif" not in _Pixel.hits and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert "/track.gif" in _Pixel.hits  # only now, and still no script ran
    assert not [text for _, text in webmail.console if "XSS" in text], webmail.console


SANITIZER_CASES = [
    # (mail HTML, text that must not survive in the cleaned HTML)
    ("<script>alert(1)</script>", "<script"),
    ("<img src=x onerror=alert(1)>", "onerror"),
    ("<body onload=alert(1)>", "onload"),
    ("<a href=\"jav&#x09;ascript:alert(1)\">x</a>", "ascript:"),
    ("<a href=\"data:text/html,<script>alert(1)</script>\">x</a>", "data:text/html"),
    ("<a href=\"vbscript:msgbox\">x</a>", "vbscript"),
    ("<iframe src=\"https://evil.test/\"></iframe>", "evil.test"),
    ("<object data=\"https://evil.test/x.swf\"></object>", "evil.test"),
    ("<embed src=\"https://evil.test/x\">", "evil.test"),
    ("<form action=\"https://evil.test/\"><input name=p><button>go</button></form>", "evil.test"),
    ("<meta http-equiv=refresh content=\"0;url=https://evil.test/\">", "evil.test"),
    ("<base href=\"https://evil.test/\">", "evil.test"),
    ("<link rel=stylesheet href=\"https://evil.test/x.css\">", "evil.test"),
    ("<style>@import url(https://evil.test/x.css);</style>", "evil.test"),
    ("<style>@import 'https://evil.test/x.css';</style>", "evil.test"),
    ("<div style=\"background:url(https://evil.test/p.gif)\">x</div>", "evil.test"),
    ("<div style=\"background:\\75 rl(https://evil.test/p.gif)\">x</div>", "evil.test"),
    ("<div style=\"background-image:image-set('https://evil.test/p.gif' 1x)\">x</div>", "evil.test"),
    ("<table background=\"https://evil.test/p.gif\"><tr><td>x</td></tr></table>", "evil.test"),
    ("<img srcset=\"https://evil.test/p.gif 1x\">", "evil.test"),
    ("<picture><source srcset=\"https://evil.test/p.gif\"><img alt=y></picture>", "evil.test"),
    ("<video poster=\"https://evil.test/p.gif\"></video>", "evil.test"),
    ("<svg><image href=\"https://evil.test/p.gif\"/><script>alert(1)</script></svg>", "evil.test"),
    ("<math><mtext><img src=x onerror=alert(1)></mtext></math>", "onerror"),
    ("<div style=\"width:expression(alert(1))\">x</div>", "expression("),
    ("<a href=\"https://ok.test/\" ping=\"https://evil.test/\">x</a>", "evil.test"),
    ("<img src=\"data:image/svg+xml,<svg onload=alert(1)>\">", "svg"),
    ("<noscript><img src=x onerror=alert(1)></noscript>", "onerror"),
    ("<template><img src=x onerror=alert(1)></template>", "onerror"),
    ("<!-- <img src=x onerror=alert(1)> -->", "onerror"),
]


def test_sanitizer_removes_every_active_or_remote_construct(open_webmail):
    """sanitize.js on a battery of known payloads (script, handlers, javascript:/data:/
    vbscript: links, frames, objects, forms, meta refresh, base, stylesheets, @import,
    CSS url() also spelled with escapes, image-set, background=, srcset, poster, SVG,
    MathML, expression(), ping, noscript, template, comments): nothing active or remote
    is left, remote images are counted as blocked, and ordinary markup survives."""
    page = open_webmail(sign_in=False).page
    results = page.evaluate("""async (cases) => {
      const {sanitize} = await import("/webmail/sanitize.js");
      return cases.map(([html]) => sanitize(html, {}));
    }""", SANITIZER_CASES)
    for (html, banned), result in zip(SANITIZER_CASES, results):
        assert banned.lower() not in result["html"].lower(), (html, result["html"])
    kept = page.evaluate("""async () => {
      const {sanitize} = await import("/webmail/sanitize.js");
      return [sanitize('<p style="color:red">Hi <b>there</b> <a href="https://ok.test/">ok</a>'
                       + '<img src="https://img.test/a.png"></p>', {}),
              sanitize('<img src="https://img.test/a.png">', {loadImages: true})];
    }""")
    assert '<p style="color:red">Hi <b>there</b>' in kept[0]["html"]
    assert 'href="https://ok.test/" target="_blank" rel="noopener noreferrer"' in kept[0]["html"]
    assert "img.test" not in kept[0]["html"] and kept[0]["blockedImages"] == 1
    assert 'src="https://img.test/a.png"' in kept[1]["html"] and kept[1]["blockedImages"] == 0


def test_keyboard_shortcuts_move_and_open(webmail, deliver, screenshot):
    """j/k move the selection in the list, Enter opens, u goes back, # deletes to Trash."""
    deliver(subject="Key one", body="1")
    deliver(subject="Key two", body="2")
    page = webmail.page
    page.locator("#message-list .subject", has_text="Key one").wait_for()
    page.locator("#message-list").focus()
    page.keyboard.press("j")
    first = page.get_attribute("#message-list li[aria-selected=true]", "data-id")
    page.keyboard.press("j")
    second = page.get_attribute("#message-list li[aria-selected=true]", "data-id")
    assert first != second
    page.keyboard.press("k")
    assert page.get_attribute("#message-list li[aria-selected=true]", "data-id") == first
    page.keyboard.press("Enter")
    page.wait_for_selector("#reader:not([hidden]) #reader-subject")
    subject = page.text_content("#reader-subject")
    screenshot(page, "conversation", readme=True)  # several messages in the list: the README picture
    page.keyboard.press("#")
    page.locator("#message-list .subject", has_text=subject).wait_for(state="detached")
    page.click("#mailbox-list button[data-role=trash]")
    page.locator("#message-list .subject", has_text=subject).wait_for()


def test_phone_layout_shows_one_pane(open_webmail, deliver, screenshot):
    """On a phone-sized screen the list fills the width; opening a message shows
    only the reader, and Back returns to the list."""
    deliver(subject="Phone", body="small screen")
    view = open_webmail(viewport={"width": 390, "height": 800})
    page = view.page
    page.locator("#message-list .subject", has_text="Phone").wait_for()
    assert not page.is_visible("#mailboxes")
    open_row(page, "Phone")
    assert not page.is_visible("#list-pane")
    screenshot(page, "phone-reader")
    page.click("#back")
    assert page.is_visible("#list-pane")


def test_sign_out_revokes_the_session(open_webmail, webmail_url):
    """Sign out returns to the sign-in screen, clears the account's mail from the page,
    and the session is gone server-side:
    the old cookie no longer opens the JMAP session resource, and a reload shows
    the sign-in screen."""
    view = open_webmail()
    page = view.page
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert "msd_session" in cookies
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    assert page.locator("#message-list li, #mailbox-list li").count() == 0  # nothing left in the page
    status, _, _ = _get_with_cookie(webmail_url, "/.well-known/jmap", cookies["msd_session"])
    assert status == 401
    page.reload()
    page.wait_for_selector("#signin:not([hidden])")
    assert page.is_hidden("#app")


def test_https_listener_serves_the_webmail_with_a_secure_cookie(open_webmail, webmail_https_url, deliver):
    """Over the https listener the same webmail signs in with a Secure session
    cookie, and new mail still arrives live (EventSource over TLS)."""
    view = open_webmail(url=webmail_https_url)
    page = view.page
    [cookie] = [c for c in page.context.cookies() if c["name"] == "msd_session"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.wait_for_selector("html[data-push=open]", state="attached")  # the EventSource is connected
    deliver(subject="Over TLS", body="secure")
    page.locator("#message-list .subject", has_text="Over TLS").wait_for(timeout=5000)


def test_long_folder_pages_in_on_scroll(webmail, webmail_server):
    """A folder longer than one page (40) lists the first page with its total known,
    and scrolling to the end of the list fetches the next page (Email/query position)."""
    import smtplib

    from playwright.sync_api import expect  # the webmail fixture has skipped without playwright
    with smtplib.SMTP(*webmail_server.address("smtp"), timeout=10) as smtp:
        for n in range(45):
            smtp.sendmail("bulk@remote.test", ["bob@example.test"],
                          f"From: bulk@remote.test\r\nTo: bob@example.test\r\nSubject: Bulk {n:02d}\r\n"
                          f"Message-ID: <bulk{n}.{time.time_ns()}@remote.test>\r\n\r\nnumber {n}\r\n")
    page = webmail.page
    page.click("#signout")
    page.wait_for_selector("#signin:not([hidden])")
    sign_in(page, "bob@example.test")
    page.locator("#message-list .subject", has_text="Bulk 44").wait_for()
    expect(page.locator("#message-list li")).to_have_count(40)
    expect(page.locator("#load-more")).to_be_visible()  # the total (45) is known
    # the list may be redrawn by a push at any time: scroll the list element, not a row
    page.eval_on_selector("#message-list", "list => list.scrollTop = list.scrollHeight")
    page.locator("#message-list .subject", has_text="Bulk 00").wait_for()
    expect(page.locator("#message-list li")).to_have_count(45)


def test_password_change_ends_the_open_session(open_webmail, webmail_server):
    """A password change revokes the browser session server-side: the next action of
    the open webmail gets 401 and shows the sign-in screen saying the session ended.
    (The push stream's end shows it by itself too, test_webmail_session.py; here
    GET /auth/session is made to look alive so only the JMAP call's 401 can do it.)"""
    webmail_server.ctl("user", "add", "frank@example.test", "--password", PASSWORD)
    view = open_webmail(user="frank@example.test")
    page = view.page
    page.route("**/auth/session", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"username": "frank@example.test", "accountId": "x", "csrfToken": "x"})))
    webmail_server.ctl("user", "passwd", "frank@example.test", "--password", "another-pw-2")
    page.click("#mailbox-list button[data-role=sent]")
    page.wait_for_selector("#signin:not([hidden])")
    assert "session has ended" in page.text_content("#signin-error")
    sign_in(page, "frank@example.test", "another-pw-2")


def _get_with_cookie(base, path, session):
    host, port = base.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": f"msd_session={session}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_session_survives_reload(webmail):
    """A reload resumes the session from the cookie (GET /auth/session) without the
    password, which the page never stores."""
    page = webmail.page
    page.reload()
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_selector("#mailbox-list button[data-role=inbox][aria-current=true]")
    stored = page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    assert PASSWORD not in stored
    assert json.loads(page.evaluate("JSON.stringify(document.cookie)")) == ""  # HttpOnly


def test_search_language_matches_the_rest_api(webmail, deliver):
    """The search box understands the /v1/search words (from:, subject:, is:unread,
    in:FOLDER, has:attachment, before:/after:, "quoted phrase") and builds the same
    JMAP filter; a from: + is:unread search lists only the matching unread mail."""
    page = webmail.page
    parsed = page.evaluate("""async () => {
      const {parseSearch} = await import("/webmail/search.js");
      const boxes = [{id: "m9", name: "Work", role: null}, {id: "m1", name: "INBOX", role: "inbox"}];
      return [parseSearch('from:carol "big plan" is:unread in:work has:attachment after:2026-01-02', boxes),
              parseSearch("in:inbox", boxes), parseSearch("   ", boxes), parseSearch("is:flagged", boxes)];
    }""")
    assert parsed[0] == {"operator": "AND", "conditions": [
        {"from": "carol"}, {"text": "big plan"}, {"notKeyword": "$seen"}, {"inMailbox": "m9"},
        {"hasAttachment": True}, {"after": "2026-01-02T00:00:00Z"}]}
    assert parsed[1:] == [{"inMailbox": "m1"}, None, {"hasKeyword": "$flagged"}]
    deliver(subject="From Erin", body="hello", sender="erin@remote.test")
    page.locator("#message-list .subject", has_text="From Erin").wait_for()
    page.fill("#search", "from:erin is:unread")
    page.press("#search", "Enter")
    page.wait_for_selector("#list-title:has-text('Search: from:erin is:unread')")
    page.locator("#message-list .subject", has_text="From Erin").wait_for()
    subjects = page.eval_on_selector_all("#message-list .subject", "xs => xs.map(x => x.textContent)")
    assert subjects == ["From Erin"]


def test_move_to_junk_and_back(webmail, deliver):
    """"Spam" moves the open message to the Junk folder (the server trains on the
    move); in Junk the button reads "Not spam" and moves it back to the inbox."""
    deliver(subject="Cheap pills", body="Buy now", sender="seller@pills.test")
    page = webmail.page
    open_row(page, "Cheap pills")
    assert page.text_content("#spam") == "Spam"
    page.click("#spam")
    page.locator("#message-list .subject", has_text="Cheap pills").wait_for(state="detached")
    page.click("#mailbox-list button[data-role=junk]")
    open_row(page, "Cheap pills")
    assert page.text_content("#spam") == "Not spam"
    page.click("#spam")
    page.locator("#message-list .subject", has_text="Cheap pills").wait_for(state="detached")
    page.click("#mailbox-list button[data-role=inbox]")
    page.locator("#message-list .subject", has_text="Cheap pills").wait_for()
