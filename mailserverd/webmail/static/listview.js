// Folder order and message-list rows of the webmail (app.js draws them).

import {el, addressText, shortDate, longDate} from "./util.js";

export function mailboxDepth(mailboxes, mailbox) {
  let depth = 0;
  for (let m = mailbox; m && m.parentId && depth < 5; depth++) {
    m = mailboxes.find((other) => other.id === m.parentId);
  }
  return depth;
}

export function orderedMailboxes(mailboxes) {
  // parents before their children, siblings in the given order
  const out = [];
  const add = (parentId) => {
    for (const m of mailboxes) {
      if ((m.parentId || null) === parentId && !out.includes(m)) { out.push(m); add(m.id); }
    }
  };
  add(null);
  for (const m of mailboxes) if (!out.includes(m)) out.push(m);
  return out;
}

// One row of the message list (role=option of the listbox, id row-INDEX for
// aria-activedescendant); `app` gives the folders, the search and the selection.
export function messageRow(app, {email, threadSize}, index) {
  const unread = !email.keywords.$seen;
  const flagged = !!email.keywords.$flagged;
  const inSent = app.mailboxByRole("sent") && email.mailboxIds[app.mailboxByRole("sent").id];
  const who = inSent ? `To: ${(email.to || []).map(addressText).join(", ")}` : (email.from || []).map(addressText).join(", ");
  const where = app.search ? Object.keys(email.mailboxIds).map((id) => {
    const mailbox = app.mailboxes.find((m) => m.id === id);
    return mailbox ? mailbox.name : "";
  }).join(", ") : "";
  const label = [unread ? "Unread" : null, flagged ? "Flagged" : null, who, email.subject || "(no subject)",
                 longDate(email.receivedAt)].filter(Boolean).join(", ");
  return el("li", {role: "option", id: `row-${index}`, class: unread ? "unread" : "", dataset: {id: email.id, index},
                   "aria-selected": index === app.selected ? "true" : "false", "aria-label": label,
                   onclick: () => { app.select(index); app.open(); }},
    el("span", {class: "marker", "aria-hidden": "true"}, unread ? "\u25CF" : ""),
    el("span", {class: "from"}, who || "(no sender)",
       threadSize > 1 && app.threads ? el("span", {class: "thread-count"}, `(${threadSize})`) : null,
       where ? el("span", {class: "where"}, where) : null),
    el("span", {class: "date"}, flagged ? el("span", {class: "glyph flag", title: "Flagged"}) : null,
       email.hasAttachment ? el("span", {class: "glyph clip", title: "Has attachments"}) : null,
       shortDate(email.receivedAt)),
    el("span", {class: "subject"}, email.subject || "(no subject)"),
    el("span", {class: "preview"}, email.preview || ""));
}
