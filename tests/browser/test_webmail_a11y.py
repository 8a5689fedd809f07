"""Keyboard and screen-reader basics of the webmail (issue 14 "accessible labels"):
every interactive element of the main screens has an accessible name as Chromium
computes it (its accessibility tree over CDP), the message list is reachable with
Tab and driven with the arrow keys (aria-activedescendant names the row), and the
keyboard focus is visible."""

from __future__ import annotations

from tests.browser.conftest import sign_in

INTERACTIVE = {"button", "link", "textbox", "searchbox", "combobox", "checkbox", "radio", "option",
               "listbox", "menuitem", "tab", "switch", "slider", "spinbutton"}
NOT_OURS = {"RootWebArea", "Iframe", "MenuListPopup"}  # the document, the mail frame, a <select>'s own popup


def unnamed_controls(page) -> list:
    """(role, outerHTML head) of every non-ignored node of the page's accessibility tree
    (main document; the sandboxed mail frame is the sender's content) that is
    interactive or focusable and has no accessible name."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
        bad = []
        for node in nodes:
            if node.get("ignored"):
                continue
            role = (node.get("role") or {}).get("value", "")
            props = {p["name"]: (p.get("value") or {}).get("value") for p in node.get("properties", [])}
            if role in NOT_OURS or not (role in INTERACTIVE or props.get("focusable")):
                continue
            if (node.get("name") or {}).get("value", "").strip():
                continue
            html = ""
            if node.get("backendDOMNodeId"):
                described = cdp.send("DOM.resolveNode", {"backendNodeId": node["backendDOMNodeId"]})
                html = cdp.send("Runtime.callFunctionOn", {
                    "objectId": described["object"]["objectId"], "returnByValue": True,
                    "functionDeclaration": "function () { return this.outerHTML.slice(0, 120); }",
                })["result"].get("value", "")
            bad.append((role, html))
        return bad
    finally:
        cdp.detach()


def test_every_control_on_the_main_screens_has_a_name(open_webmail, deliver):
    """Sign-in, inbox with a conversation open (toolbar, attachments, blocked-images
    notice), the compose dialog, and the phone layout with the folder drawer open: no
    button, link, field, option or other focusable element without an accessible name."""
    boundary = "b-a11y"
    deliver(raw=("From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\nSubject: Accessible\r\n"
                 f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary={boundary}\r\n\r\n"
                 f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                 "<p>Hi <img src=\"https://img.test/a.png\"></p>\r\n"
                 f"--{boundary}\r\nContent-Type: text/plain; name=a.txt\r\n"
                 "Content-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n"
                 f"--{boundary}--\r\n"))
    view = open_webmail(sign_in=False)
    page = view.page
    # the checker itself: an icon-only button without a label is reported
    page.evaluate("document.body.append(Object.assign(document.createElement('button'), {id: 'probe'}))")
    assert [role for role, html in unnamed_controls(page) if 'id="probe"' in html] == ["button"]
    page.evaluate("document.getElementById('probe').remove()")
    assert unnamed_controls(page) == []
    sign_in(page, "alice@example.test")
    row = page.locator("#message-list li", has=page.locator(".subject", has_text="Accessible"))
    row.first.click()
    page.wait_for_selector("#reader:not([hidden]) .attachments a")
    page.wait_for_selector(".images-blocked:not([hidden]) button")
    assert unnamed_controls(page) == []
    page.click("#reply")
    page.wait_for_selector("form.compose")
    assert unnamed_controls(page) == []
    page.keyboard.press("Escape")
    page.wait_for_selector("form.compose", state="detached")
    page.set_viewport_size({"width": 390, "height": 800})
    page.click("#back")
    page.click("#nav-toggle")
    page.wait_for_selector("#mailboxes.open")
    assert unnamed_controls(page) == []


def test_message_list_by_keyboard_with_visible_focus(webmail, deliver):
    """Tab reaches the message list; Down/Up/Home/End move the selected row, which
    aria-activedescendant names and an outline shows while the list has focus; Enter
    opens the message. Every focused control draws a focus outline."""
    deliver(subject="Keyboard A", body="a")
    deliver(subject="Keyboard B", body="b")
    page = webmail.page
    page.locator("#message-list .subject", has_text="Keyboard A").wait_for()
    page.focus("#search")
    for _ in range(40):  # bounded: the controls before the list
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), (focused, outline)
        if focused == "message-list":
            break
    assert focused == "message-list"
    page.keyboard.press("ArrowDown")
    active = page.get_attribute("#message-list", "aria-activedescendant")
    assert active and page.get_attribute(f"#{active}", "aria-selected") == "true"
    row_outline = page.evaluate(f"getComputedStyle(document.getElementById('{active}')).outlineStyle")
    assert row_outline != "none"
    page.keyboard.press("End")
    last = page.get_attribute("#message-list", "aria-activedescendant")
    assert last == f"row-{page.locator('#message-list li').count() - 1}"
    page.keyboard.press("Home")
    assert page.get_attribute("#message-list", "aria-activedescendant") == "row-0"
    page.keyboard.press("Enter")
    page.wait_for_selector("#reader:not([hidden]) #reader-subject")
