"""Webmail compose in headless Chromium against the real daemon (issue 14): new
message, reply with an uploaded attachment, reply-all, forward with the
original's attachment, drafts saved in Drafts and reopened, send errors shown
with nothing sent. What the browser did is checked on the server side too,
over JMAP (Basic auth) and IMAP."""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib
import time
import uuid
from email.message import EmailMessage

import pytest

from tests.support.daemon import PASSWORD
from tests.transcript.test_jmap_http import ALICE, BOB, CORE, MAIL, Client

pytest.importorskip("playwright.sync_api",
                    reason="playwright is not installed: pip install -e '.[test]' (bin/test does)")
from playwright.sync_api import expect  # noqa: E402

CAROL, DAVE = "carol@example.test", "dave@example.test"
USING = (CORE, MAIL, "urn:ietf:params:jmap:submission")


@pytest.fixture(scope="module")
def server(webmail_server):
    """The webmail daemon of conftest.py with two more local users, carol@ and dave@."""
    for address in (CAROL, DAVE):
        webmail_server.ctl("user", "add", address, "--password", PASSWORD)
    return webmail_server


# -- server-side views ---------------------------------------------------------------------

def jmap(server, user, calls):
    status, _headers, answer = Client(server, user).api(calls, using=USING)
    assert status == 200, answer
    return answer["methodResponses"]


def emails_in(server, user, role, subject) -> list[dict]:
    """The Emails in the mailbox of `role` whose subject holds `subject`."""
    account = Client(server, user).session()["primaryAccounts"][MAIL]
    boxes = jmap(server, user, [["Mailbox/get", {"accountId": account, "ids": None}, "m"]])[0][1]["list"]
    box = next(b["id"] for b in boxes if b.get("role") == role)
    found = jmap(server, user, [
        ["Email/query", {"accountId": account, "filter": {"inMailbox": box, "subject": subject}}, "q"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["subject", "keywords", "mailboxIds", "from", "to", "cc"]}, "g"]])
    return found[1][1]["list"]


def imap_messages(server, user, subject) -> list:
    """`user`'s INBOX messages whose subject holds `subject`, parsed, read over IMAP."""
    with imaplib.IMAP4(*server.address("imap"), timeout=10) as imap:
        imap.login(user, PASSWORD)
        imap.select("INBOX", readonly=True)
        if subject.isascii():
            _status, data = imap.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", f'"{subject}"')
        else:
            imap.literal = subject.encode("utf-8")  # RFC 3501 4.3: the search string as a literal
            _status, data = imap.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
        found = []
        for uid in data[0].split():
            _status, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            found.append(email.message_from_bytes(fetched[0][1], policy=email.policy.default))
        return found


def wait_for_messages(server, user, subject, count=1, seconds=10.0) -> list:
    deadline = time.monotonic() + seconds
    while True:
        found = imap_messages(server, user, subject)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def send_mail(server, sender, recipients, subject, body="Original text.\nSecond line.\n", attachment=None,
            cc=(), message_id=None):
    """A message from local user `sender`, submitted over authenticated SMTP (submission
    listener) to local recipients; returns its Message-ID once the first recipient has it."""
    message = EmailMessage()
    message["From"] = f"Sender Name <{sender}>"
    message["To"] = ", ".join(recipients)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.test>"
    message.set_content(body)
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    with smtplib.SMTP(*server.address("submission"), timeout=10) as smtp:
        smtp.login(sender, PASSWORD)
        smtp.send_message(message, from_addr=sender, to_addrs=list(recipients) + list(cc))
    assert wait_for_messages(server, recipients[0], subject), "the test message was not delivered"
    return message["Message-ID"]


def attachments_of(message) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


# -- the browser ---------------------------------------------------------------------------

def subject_for(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:8]}"


@pytest.fixture
def pages(server, open_webmail):
    """pages(user, ...) -> one signed-in page per user, each in its own browser context."""
    def make(*users):
        out = [open_webmail(user).page for user in users]
        return out if len(out) > 1 else out[0]
    return make


def field(page, label):
    return page.locator("form.compose").get_by_label(label, exact=True)


def open_message(page, subject):
    """Click the message in the open list and wait for the reader."""
    page.locator("#message-list").get_by_text(subject).first.click()
    expect(page.locator("#reader")).to_be_visible()


def open_folder(page, role):
    page.locator(f"#mailbox-list button[data-role={role}]").click()


# -- tests ---------------------------------------------------------------------------------

def test_compose_and_send_arrives_in_the_other_webmail(server, pages, screenshot):
    """A new message composed and sent with Ctrl+Enter from alice's webmail appears in
    bob's open inbox (another browser context) without reload within seconds; alice's copy
    is in Sent without $draft and nothing stays in Drafts. Non-ASCII subject and body
    arrive intact."""
    alice, bob = pages(ALICE, BOB)
    subject = subject_for("Grüße, Bob")
    alice.get_by_role("button", name="Compose").click()
    expect(alice.locator("form.compose")).to_be_visible()
    field(alice, "To").fill(f"Bob <{BOB}>")
    field(alice, "Subject").fill(subject)
    field(alice, "Message").fill("Hi Bob,\nlunch at noon? 🍜 café\n")
    screenshot(alice, "compose-new")
    field(alice, "Message").press("Control+Enter")
    expect(alice.locator("form.compose")).to_have_count(0)
    expect(bob.locator("#message-list").get_by_text(subject)).to_be_visible()
    [received] = imap_messages(server, BOB, subject)
    assert received["From"].addresses[0].addr_spec == ALICE
    assert received["Subject"] == subject
    assert "lunch at noon? 🍜 café" in received.get_body(("plain",)).get_content()
    [sent] = emails_in(server, ALICE, "sent", subject)
    assert "$draft" not in sent["keywords"]
    assert emails_in(server, ALICE, "drafts", subject) == []


def test_reply_with_uploaded_attachment(server, pages, screenshot):
    """Reply to a message: To is its Reply-To/From, the subject gets "Re: " once, the body
    quotes "On DATE, NAME wrote:" with "> " lines, and an attachment uploaded from a file
    input arrives at the other account with its (non-ASCII) name and content, with In-Reply-To and
    References naming the original."""
    subject = subject_for("Re: Figures")
    original_id = send_mail(server, BOB, [ALICE], subject, body="Can you send the figures?\n")
    alice = pages(ALICE)
    open_message(alice, subject)
    alice.get_by_role("button", name="Reply", exact=True).click()
    expect(alice.locator("form.compose")).to_be_visible()
    assert field(alice, "To").input_value() == f"Sender Name <{BOB}>"
    assert field(alice, "Subject").input_value() == subject  # already "Re: ": not twice
    body = field(alice, "Message").input_value()
    assert "Sender Name wrote:\n> Can you send the figures?" in body
    field(alice, "Message").press("Control+Home")
    field(alice, "Message").type("Here they are.")
    data = b"month,total\r\njan,3\r\nfeb,5\r\n"
    alice.locator("form.compose input[type=file]").set_input_files(
        files=[{"name": "Zahlen-für-Jänner.csv", "mimeType": "text/csv", "buffer": data}])
    expect(alice.locator(".compose-attachments li")).to_contain_text("Zahlen-für-Jänner.csv")
    expect(alice.locator(".compose-attachments li")).not_to_contain_text("uploading")
    screenshot(alice, "compose-reply")
    alice.get_by_role("button", name="Send", exact=True).click()
    expect(alice.locator("form.compose")).to_have_count(0)
    replies = [m for m in wait_for_messages(server, BOB, subject) if m["In-Reply-To"]]
    assert len(replies) == 1
    reply = replies[0]
    assert reply["Subject"] == subject
    assert reply["In-Reply-To"] == original_id and original_id in reply["References"]
    assert reply.get_body(("plain",)).get_content().startswith("Here they are.")
    assert attachments_of(reply) == {"Zahlen-für-Jänner.csv": data.decode()}
    [original] = emails_in(server, ALICE, "inbox", subject)
    assert original["keywords"].get("$answered") is True


def test_reply_all_recipients(server, pages):
    """Reply all: To is the sender, Cc every other To/Cc recipient of the original except
    the user's own address; each of them receives the reply."""
    subject = subject_for("Team plan")
    send_mail(server, BOB, [ALICE, CAROL], subject, cc=[DAVE])
    alice = pages(ALICE)
    open_message(alice, subject)
    alice.get_by_role("button", name="Reply all").click()
    expect(alice.locator("form.compose")).to_be_visible()
    assert field(alice, "To").input_value() == f"Sender Name <{BOB}>"
    assert field(alice, "Cc").input_value() == f"{CAROL}, {DAVE}"
    assert field(alice, "Subject").input_value() == "Re: " + subject
    field(alice, "Message").press("Control+Enter")
    expect(alice.locator("form.compose")).to_have_count(0)
    for user in (BOB, CAROL, DAVE):
        got = [m for m in wait_for_messages(server, user, "Re: " + subject) if m["Subject"].startswith("Re:")]
        assert len(got) == 1, user
    assert imap_messages(server, ALICE, "Re: " + subject) == []  # not sent to herself


def test_forward_carries_the_original_attachment(server, pages):
    """Forward: "Fwd: " subject, the original's attachment carried over by blobId (no
    re-upload), and the recipient gets it with the same name and bytes. Markup in the
    original's attachment name is shown as text, never parsed."""
    subject = subject_for("Contract")
    data = bytes(range(256)) * 4
    name = "<img src=x onerror=window.pwned=1>contract.bin"
    send_mail(server, BOB, [ALICE], subject, attachment=(name, data))
    alice = pages(ALICE)
    open_message(alice, subject)
    alice.get_by_role("button", name="Forward").click()
    expect(alice.locator("form.compose")).to_be_visible()
    assert field(alice, "Subject").input_value() == "Fwd: " + subject
    expect(alice.locator(".compose-attachments li")).to_contain_text(name)
    assert alice.locator("form.compose img").count() == 0
    assert alice.evaluate("window.pwned") is None
    assert "Forwarded message" in field(alice, "Message").input_value()
    field(alice, "To").fill(CAROL)
    field(alice, "To").press("Control+Enter")
    expect(alice.locator("form.compose")).to_have_count(0)
    [forwarded] = wait_for_messages(server, CAROL, "Fwd: " + subject)
    assert attachments_of(forwarded) == {name: data}
    assert "Original text." in forwarded.get_body(("plain",)).get_content()


def test_draft_saved_in_drafts_and_reopened(server, pages, screenshot):
    """Save draft stores one Email with $draft in Drafts; saving again replaces it (still
    one); Escape then closes without asking; opening it from Drafts continues it with its
    fields and attachment, and sending it leaves Drafts empty."""
    subject = subject_for("Draft plan")
    alice = pages(ALICE)
    alice.get_by_role("button", name="Compose").click()
    field(alice, "To").fill(BOB)
    field(alice, "Subject").fill(subject)
    field(alice, "Message").fill("first words")
    alice.locator("form.compose input[type=file]").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"draft notes\n"}])
    expect(alice.locator(".compose-attachments li")).not_to_contain_text("uploading")
    alice.get_by_role("button", name="Save draft").click()
    expect(alice.locator(".compose-status")).to_contain_text("Draft saved")
    [first] = emails_in(server, ALICE, "drafts", subject)
    assert first["keywords"].get("$draft") is True
    field(alice, "Message").fill("first words, then more")
    alice.get_by_role("button", name="Save draft").click()
    expect(alice.locator(".compose-status")).to_contain_text("Draft saved")
    drafts = emails_in(server, ALICE, "drafts", subject)
    assert len(drafts) == 1 and drafts[0]["id"] != first["id"]
    field(alice, "Message").press("Escape")
    expect(alice.locator("form.compose")).to_have_count(0)
    open_folder(alice, "drafts")
    alice.locator("#message-list").get_by_text(subject).first.click()
    expect(alice.locator("form.compose")).to_be_visible()
    assert field(alice, "To").input_value() == BOB
    assert field(alice, "Subject").input_value() == subject
    assert field(alice, "Message").input_value().startswith("first words, then more")
    expect(alice.locator(".compose-attachments li")).to_contain_text("notes.txt")
    screenshot(alice, "compose-draft")
    field(alice, "Message").press("Control+Enter")
    expect(alice.locator("form.compose")).to_have_count(0)
    [received] = wait_for_messages(server, BOB, subject)
    assert attachments_of(received) == {"notes.txt": "draft notes\n"}
    assert emails_in(server, ALICE, "drafts", subject) == []


def test_send_errors_shown_and_nothing_sent(server, pages, screenshot):
    """A malformed address is refused in the form (marked aria-invalid, nothing sent); a
    recipient the server refuses (no such local user) shows the server's invalidRecipients
    error and nothing is delivered; Escape with unsaved changes asks before closing."""
    subject = subject_for("Errors")
    alice = pages(ALICE)
    alice.set_viewport_size({"width": 380, "height": 720})  # a phone
    alice.get_by_role("button", name="Compose").click()
    field(alice, "To").fill("bob@@example.test")
    field(alice, "Subject").fill(subject)
    alice.get_by_role("button", name="Send", exact=True).click()
    expect(alice.locator(".compose-error")).to_contain_text("Not an email address: bob@@example.test")
    expect(field(alice, "To")).to_have_attribute("aria-invalid", "true")
    field(alice, "To").fill(f"{BOB}, nobody@example.test")
    alice.get_by_role("button", name="Send", exact=True).click()
    expect(alice.locator(".compose-error")).to_contain_text("nobody@example.test")
    expect(alice.locator("form.compose")).to_be_visible()
    screenshot(alice, "compose-error-phone")
    assert imap_messages(server, BOB, subject) == []
    assert emails_in(server, ALICE, "sent", subject) == []
    field(alice, "Message").fill("changed")
    field(alice, "Message").press("Escape")
    expect(alice.get_by_role("alertdialog", name="Unsaved changes")).to_be_visible()
    alice.get_by_role("button", name="Discard").click()
    expect(alice.locator("form.compose")).to_have_count(0)


def test_from_identity_no_longer_owned_is_refused(server, pages):
    """The identity picker lists the account's Identities (Identity/get), aliases included;
    when the chosen alias is removed while the form is open, Send shows the refusal,
    nothing is delivered, and the picker is refreshed without that address."""
    alias = f"sales-{uuid.uuid4().hex[:6]}@example.test"
    server.ctl("alias", "add", alias, ALICE)
    subject = subject_for("From alias")
    alice = pages(ALICE)
    alice.get_by_role("button", name="Compose").click()
    field(alice, "From").select_option(label=alias)
    field(alice, "To").fill(BOB)
    field(alice, "Subject").fill(subject)
    server.ctl("alias", "remove", alias)
    field(alice, "Message").press("Control+Enter")
    expect(alice.locator(".compose-error")).to_contain_text("no longer send from this address")
    expect(field(alice, "From").locator("option")).not_to_contain_text([alias])
    assert imap_messages(server, BOB, subject) == []
    assert emails_in(server, ALICE, "sent", subject) == []


def test_autosave_after_30_seconds_of_changes(server, pages):
    """With unsaved changes the draft is saved by itself within 30 s (browser clock
    fast-forwarded), once: an unchanged form is not saved again."""
    subject = subject_for("Autosaved")
    alice = pages(ALICE)
    alice.clock.install()
    alice.get_by_role("button", name="Compose").click()
    field(alice, "To").fill(BOB)
    field(alice, "Subject").fill(subject)
    assert emails_in(server, ALICE, "drafts", subject) == []
    alice.clock.run_for(31_000)
    expect(alice.locator(".compose-status")).to_contain_text("Draft saved")
    [saved] = emails_in(server, ALICE, "drafts", subject)
    alice.clock.run_for(61_000)
    assert [e["id"] for e in emails_in(server, ALICE, "drafts", subject)] == [saved["id"]]


HELPERS = """async () => {
  const m = await import("/webmail/compose-text.js");
  const own = new Set(["alice@example.test"]);
  const html = {subject: "Fwd: Re: Plan", from: [{name: null, email: "x@remote.test"}],
    to: [{name: null, email: "alice@example.test"}], messageId: ["c@x"], inReplyTo: ["b@x"],
    references: null, sentAt: "2026-01-02T03:04:05Z", textBody: [{partId: "1", type: "text/html"}],
    bodyValues: {"1": {value: "<p>One <b>two</b></p><script>bad()</script><div>three</div>"}}};
  const mine = {subject: "Sent by me", from: [{name: "Alice", email: "Alice@Example.test"}],
    to: [{name: "Bob", email: "bob@example.test"}], messageId: ["d@x"], textBody: [], bodyValues: {}};
  return {
    parsed: m.parseAddresses('A B <a@x.org>, "Last, First" <b@y.com>; c@z.net, bad@, x y@z'),
    formatted: m.formatAddress({name: "Last, First", email: "b@y.com"}),
    re: [m.prefixed("RE: x", "Re: ", /^re:/i), m.prefixed("x", "Re: ", /^re:/i)],
    htmlReply: m.initialFields("reply", html, own),
    ownReply: m.initialFields("reply", mine, own).to,
    oldIds: m.initialFields("reply", {...html, references: ["no-at-sign", "b@x"]}, own).references,
  };
}"""


def test_address_parsing_and_reply_text(open_webmail):
    """compose-text.js, run in the browser: addresses split on , and ; outside quotes and
    angle brackets, malformed ones reported; display names with specials quoted; "Re: "
    added once (any case); an HTML-only message is quoted as its text (no script text);
    In-Reply-To is the parent's Message-ID and References the parent's In-Reply-To plus
    it (RFC 5322 3.6.4), without ids lacking "@"; replying to one's own message goes to its
    recipients."""
    page = open_webmail(sign_in=False).page
    got = page.evaluate(HELPERS)
    assert got["parsed"] == {"list": [{"name": "A B", "email": "a@x.org"},
                                      {"name": "Last, First", "email": "b@y.com"},
                                      {"name": None, "email": "c@z.net"}],
                             "bad": ["bad@", "x y@z"]}
    assert got["formatted"] == '"Last, First" <b@y.com>'
    assert got["re"] == ["RE: x", "Re: x"]
    reply = got["htmlReply"]
    assert reply["subject"] == "Re: Fwd: Re: Plan"
    assert reply["to"] == [{"name": None, "email": "x@remote.test"}]
    assert reply["inReplyTo"] == ["c@x"] and reply["references"] == ["b@x", "c@x"]
    assert "x@remote.test wrote:\n> One two\n> three" in reply["body"] and "bad()" not in reply["body"]
    assert got["ownReply"] == [{"name": "Bob", "email": "bob@example.test"}]
    assert got["oldIds"] == ["b@x", "c@x"]  # an id the server would refuse is left out


DROP = """([name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, {type: "text/plain"}));
  const form = document.querySelector("form.compose");
  form.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
  form.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""


def test_dropped_file_attached_and_removed_one_not_sent(server, pages):
    """A file dropped on the form is uploaded and listed; an attachment removed with its
    Remove button is not sent; the message arrives with the dropped file only."""
    subject = subject_for("Dropped")
    alice = pages(ALICE)
    alice.get_by_role("button", name="Compose").click()
    field(alice, "To").fill(BOB)
    field(alice, "Subject").fill(subject)
    alice.locator("form.compose input[type=file]").set_input_files(
        files=[{"name": "unwanted.txt", "mimeType": "text/plain", "buffer": b"no\n"}])
    expect(alice.locator(".compose-attachments li")).not_to_contain_text("uploading")
    alice.evaluate(DROP, ["dropped.txt", "dropped content\n"])
    expect(alice.locator(".compose-attachments li")).to_have_count(2)
    expect(alice.locator(".compose-attachments li").nth(1)).not_to_contain_text("uploading")
    alice.get_by_role("button", name="Remove unwanted.txt").click()
    expect(alice.locator(".compose-attachments li")).to_have_count(1)
    field(alice, "Message").press("Control+Enter")
    expect(alice.locator("form.compose")).to_have_count(0)
    [received] = wait_for_messages(server, BOB, subject)
    assert attachments_of(received) == {"dropped.txt": "dropped content\n"}
