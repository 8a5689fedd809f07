// Compose, reply, reply-all, forward and drafts for the webmail, over JMAP only.
//
//   openCompose(app, {mode, email, autosaveMs})
//     mode: "new" | "reply" | "replyAll" | "forward" | "draft" (continue an Email with $draft)
//     email: the Email replied to / forwarded / continued; only its id is read.
//   From `app` this module uses app.client (the JMAPClient of jmap.js) and, when present,
//   app.notify(text). It mounts its own dialog on document.body and dispatches the document
//   event "webmail:compose" {detail: {action: "sent" | "saved" | "closed"}}.
//
// A draft is an Email in the Drafts mailbox with $draft (RFC 8621 4.6, Email/set create);
// saving creates a new one and only then destroys the previous one (Emails are immutable).
// Sending saves the draft and submits it in one request: EmailSubmission/set with
// onSuccessUpdateEmail moving it to Sent without $draft (RFC 8621 7.5). Replies carry
// In-Reply-To and References (RFC 5322 3.6.4). Message data is only ever put in the page
// with textContent or form values, never as HTML.

import {formatList, formatSize, initialFields, parseAddresses} from "./compose-text.js";

const GET_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "from", "to", "cc", "bcc", "replyTo",
  "subject", "sentAt", "receivedAt", "messageId", "inReplyTo", "references", "textBody", "htmlBody",
  "attachments", "bodyValues"];
const AUTOSAVE_MS = 30000;
const ERRORS = {
  forbiddenFrom: "You may not send from this address.",
  forbiddenMailFrom: "You may not send from this address.",
  noRecipients: "Add at least one recipient.",
  tooManyRecipients: "Too many recipients for this server.",
  invalidRecipients: "The server refused some recipients",
  invalidEmail: "The server could not send this message as it is.",
  tooLarge: "The message is too large for this server.",
  forbiddenToSend: "This account may not send mail now.",
  blobNotFound: "An attachment is no longer available; remove it and attach it again.",
  overQuota: "Your mailbox is full: the draft cannot be stored.",
  invalidProperties: "The message could not be saved.",
};
let counter = 0;
let current = null;  // the open compose, one at a time

// ---- the dialog ----

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function describe(error) {
  const type = error && error.type;
  let text = ERRORS[type] || `The server answered ${type || "an error"}.`;
  if (type === "invalidRecipients" && error.invalidRecipients) text += ": " + error.invalidRecipients.join(", ");
  if (error && error.description && type !== "invalidRecipients") text += ` (${error.description})`;
  return text;
}

class Compose {
  constructor(app, options) {
    this.app = app;
    this.client = app.client;
    this.mode = options.mode || "new";
    this.source = options.email || null;
    this.autosaveMs = options.autosaveMs || AUTOSAVE_MS;
    this.draftId = null;
    this.attachments = [];
    this.uploads = 0;
    this.dirty = false;
    this.busy = false;
    this.returnFocus = document.activeElement;
    this.id = `compose-${++counter}`;
  }

  async call(calls) {
    const responses = await this.client.call(calls);
    for (const [name, args] of responses) {
      if (name === "error") throw Object.assign(new Error(describe(args)), {problem: args});
    }
    return responses;
  }

  async load() {
    const accountId = this.client.accountId;
    const calls = [
      ["Identity/get", {accountId, ids: null}, "i"],
      ["Mailbox/get", {accountId, ids: null, properties: ["role", "name"]}, "m"],
    ];
    if (this.source && this.source.id) {
      calls.push(["Email/get", {accountId, ids: [this.source.id], properties: GET_PROPERTIES,
        fetchTextBodyValues: true, fetchHTMLBodyValues: true, maxBodyValueBytes: 262144}, "e"]);
    }
    const responses = await this.call(calls);
    this.identities = responses[0][1].list;
    const boxes = responses[1][1].list;
    this.drafts = (boxes.find((b) => b.role === "drafts") || {}).id;
    this.sent = (boxes.find((b) => b.role === "sent") || {}).id;
    const email = responses[2] ? responses[2][1].list[0] : null;
    if (this.source && !email) throw new Error("That message no longer exists.");
    this.original = email;
    if (this.mode === "draft") this.draftId = email.id;
    const own = new Set([...this.identities.map((i) => i.email.toLowerCase()),
      (this.client.username || "").toLowerCase()]);
    return initialFields(this.mode, email, own);
  }

  build(fields) {
    const id = (name) => `${this.id}-${name}`;
    const row = (name, label, input) => el("div", {class: "compose-row"},
      el("label", {for: id(name), text: label}), input);
    const text = (name, value, extra = {}) => el("input", {id: id(name), name, type: "text",
      autocomplete: "off", spellcheck: "false", value, ...extra});
    this.fromSelect = el("select", {id: id("from"), name: "from"});
    const match = this.fillIdentities((fields.from && fields.from.email) || this.client.username || "");
    this.to = text("to", formatList(fields.to), {"aria-describedby": id("error")});
    this.cc = text("cc", formatList(fields.cc));
    this.bcc = text("bcc", formatList(fields.bcc));
    this.subject = text("subject", fields.subject, {spellcheck: "true"});
    this.body = el("textarea", {id: id("body"), name: "body", rows: "14", spellcheck: "true"});
    this.body.value = fields.body;
    if (this.mode === "new" && match && match.textSignature) this.body.value = `\n\n-- \n${match.textSignature}`;
    this.inReplyTo = fields.inReplyTo;
    this.references = fields.references;
    this.fileInput = el("input", {id: id("files"), type: "file", multiple: true, class: "compose-file",
      onchange: () => {
        const files = [...this.fileInput.files];
        this.fileInput.value = "";
        this.addFiles(files);
      }});
    this.list = el("ul", {class: "compose-attachments", "aria-label": "Attachments"});
    this.error = el("p", {id: id("error"), class: "compose-error", role: "alert"});
    this.status = el("p", {class: "compose-status", role: "status", "aria-live": "polite"});
    this.sendButton = el("button", {type: "submit", class: "compose-send", text: "Send"});
    this.saveButton = el("button", {type: "button", text: "Save draft", onclick: () => this.save()});
    this.confirmBar = el("div", {class: "compose-confirm", hidden: true, role: "alertdialog",
      "aria-label": "Unsaved changes"},
      el("span", {text: "This message has unsaved changes."}),
      el("button", {type: "button", text: "Save and close", onclick: () => this.save().then((ok) => ok && this.close())}),
      el("button", {type: "button", text: "Discard", onclick: () => this.close()}),
      el("button", {type: "button", text: "Keep editing", onclick: () => this.hideConfirm()}));
    const titles = {new: "New message", reply: "Reply", replyAll: "Reply all", forward: "Forward", draft: "Draft"};
    this.form = el("form", {class: "compose", role: "dialog", "aria-modal": "true", "aria-labelledby": id("title"),
      novalidate: true, onsubmit: (event) => { event.preventDefault(); this.send(); },
      onkeydown: (event) => this.key(event), oninput: () => { this.dirty = true; },
      onchange: () => { this.dirty = true; },
      ondragover: (event) => { if (event.dataTransfer.types.includes("Files")) event.preventDefault(); },
      ondrop: (event) => {  // files dropped anywhere on the form are attached
        if (!event.dataTransfer.files.length) return;
        event.preventDefault();
        this.addFiles([...event.dataTransfer.files]);
      }},
    el("header", {class: "compose-head"},
      el("h2", {id: id("title"), text: titles[this.mode] || titles.new}),
      el("button", {type: "button", class: "compose-close", "aria-label": "Close compose", text: "×",
        onclick: () => this.requestClose()})),
    row("from", "From", this.fromSelect), row("to", "To", this.to), row("cc", "Cc", this.cc),
    row("bcc", "Bcc", this.bcc), row("subject", "Subject", this.subject),
    el("label", {for: id("body"), class: "compose-body-label", text: "Message"}), this.body,
    el("div", {class: "compose-files"}, el("label", {for: id("files"), class: "compose-attach", text: "Attach files"}),
      this.fileInput, this.list),
    this.error, this.status, this.confirmBar,
    el("footer", {class: "compose-actions"}, this.sendButton, this.saveButton,
      el("button", {type: "button", text: "Cancel", onclick: () => this.requestClose()})));
    this.backdrop = el("div", {class: "compose-backdrop"}, this.form);
    for (const item of fields.attachments) this.addAttachment(item);
    document.body.append(this.backdrop);
    // a reply (or a draft that has recipients) starts in the body, anything else at To
    (this.mode.startsWith("reply") || (this.mode === "draft" && this.to.value) ? this.body : this.to).focus();
    if (this.mode === "reply" || this.mode === "replyAll") this.body.setSelectionRange(0, 0);
    this.unload = (event) => { if (this.dirty || this.uploads) event.preventDefault(); };
    window.addEventListener("beforeunload", this.unload);  // leaving the page asks too
    this.timer = setInterval(() => { if (this.dirty && !this.busy && !this.uploads) this.save(true); },
      this.autosaveMs);
  }

  // The From picker (Identity/get, RFC 8621 6.1), choosing the Identity of `wanted` if any.
  fillIdentities(wanted) {
    this.fromSelect.replaceChildren(...this.identities.map((identity) => el("option", {value: identity.id,
      text: identity.name ? `${identity.name} <${identity.email}>` : identity.email})));
    const match = this.identities.find((i) => i.email.toLowerCase() === wanted.toLowerCase()) ||
      this.identities.find((i) => i.email.toLowerCase() === (this.client.username || "").toLowerCase());
    if (match) this.fromSelect.value = match.id;
    return match;
  }

  // After the server refused the Identity (removed since the form opened): offer the current ones.
  async reloadIdentities() {
    const chosen = this.identities.find((i) => i.id === this.fromSelect.value);
    const [[name, result]] = await this.client.call([["Identity/get", {accountId: this.client.accountId, ids: null},
      "i"]]);
    if (name !== "Identity/get") return;
    this.identities = result.list;
    this.fillIdentities(chosen ? chosen.email : "");
  }

  key(event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      this.send();
    } else if (event.key === "Escape") {
      event.preventDefault();
      if (!this.confirmBar.hidden) this.hideConfirm();
      else this.requestClose();
    } else if (event.key === "Tab") {
      // aria-modal: focus stays in the dialog (wraps at both ends)
      const stops = [...this.form.querySelectorAll("input, select, textarea, button")]
        .filter((node) => !node.disabled && node.offsetParent !== null);
      const [first, last] = [stops[0], stops[stops.length - 1]];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    }
    event.stopPropagation();  // the mail view's shortcuts stay out of the form
  }

  addAttachment(item) {
    const entry = {...item};
    const label = el("span", {class: "compose-attachment-name", text: entry.name});
    const size = el("span", {class: "compose-attachment-size", text: formatSize(entry.size || 0)});
    entry.node = el("li", {}, label, size, el("button", {type: "button", "aria-label": `Remove ${entry.name}`,
      text: "Remove", onclick: () => {
        this.attachments = this.attachments.filter((a) => a !== entry);
        entry.node.remove();
        this.dirty = true;
      }}));
    entry.sizeNode = size;
    this.attachments.push(entry);
    this.list.append(entry.node);
    return entry;
  }

  async addFiles(files) {
    await Promise.all(files.map(async (file) => {
      const entry = this.addAttachment({blobId: null, type: file.type || "application/octet-stream",
        name: file.name, size: file.size, disposition: "attachment"});
      entry.sizeNode.textContent = `${formatSize(file.size)}, uploading…`;
      this.uploads++;
      try {
        const blob = await this.client.upload(file, entry.type);
        entry.blobId = blob.blobId;
        entry.sizeNode.textContent = formatSize(blob.size);
        this.dirty = true;
      } catch (error) {
        this.attachments = this.attachments.filter((a) => a !== entry);
        entry.node.remove();
        this.showError(`Could not attach ${file.name}: ${error.message}`);
      } finally {
        this.uploads--;
      }
    }));
  }

  showError(text) {
    this.error.textContent = text;
    this.status.textContent = "";
  }

  // The Email/set creation for the form, or null after showing what is wrong.
  spec() {
    const spec = {mailboxIds: {[this.drafts]: true}, keywords: {$draft: true, $seen: true},
      subject: this.subject.value.replace(/[\r\n]+/g, " "),
      textBody: [{partId: "text", type: "text/plain"}], bodyValues: {text: {value: this.body.value}}};
    const identity = this.identities.find((i) => i.id === this.fromSelect.value);
    if (!identity) return this.showError("Choose the address to send from."), null;
    spec.from = [{name: identity.name || null, email: identity.email}];
    if (identity.replyTo && identity.replyTo.length) spec.replyTo = identity.replyTo;
    for (const [prop, input] of [["to", this.to], ["cc", this.cc], ["bcc", this.bcc]]) {
      const {list, bad} = parseAddresses(input.value);
      if (bad.length) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return this.showError(`Not an email address: ${bad.join(", ")}`), null;
      }
      input.removeAttribute("aria-invalid");
      if (prop === "bcc" && identity.bcc) {  // the Identity's bcc (RFC 8621 6.1), once
        const known = new Set(list.map((a) => a.email.toLowerCase()));
        list.push(...identity.bcc.filter((a) => !known.has(a.email.toLowerCase())));
      }
      if (list.length) spec[prop] = list;
    }
    if (this.inReplyTo && this.inReplyTo.length) spec.inReplyTo = this.inReplyTo;
    if (this.references && this.references.length) spec.references = this.references;
    if (this.attachments.length) {
      spec.attachments = this.attachments.map((a) => {
        const part = {blobId: a.blobId, type: a.type, name: a.name, disposition: a.disposition};
        if (a.cid) part.cid = a.cid;
        return part;
      });
    }
    return spec;
  }

  // Store the form as a new draft ("#draft"), then destroy the draft it replaces.
  async store(spec, extra = []) {
    const accountId = this.client.accountId;
    const responses = await this.client.call([["Email/set", {accountId, create: {draft: spec}}, "s"], ...extra,
      ["Email/get", {accountId, ids: ["#draft"], properties: ["attachments"]}, "g"]]);
    const [name, set] = responses[0];
    const problem = name === "error" ? set : set.created && set.created.draft ? null : (set.notCreated || {}).draft;
    if (problem) throw Object.assign(new Error(describe(problem)), {problem});
    const previous = this.draftId;
    this.draftId = set.created.draft.id;
    const [gotName, got] = responses[responses.length - 1];
    const parts = gotName === "Email/get" && got.list[0] ? got.list[0].attachments || [] : [];
    // The old draft's parts go with it: point at the new draft's parts (same order).
    if (parts.length === this.attachments.length) this.attachments.forEach((a, i) => { a.blobId = parts[i].blobId; });
    if (previous) await this.call([["Email/set", {accountId, destroy: [previous]}, "d"]]).catch(() => {});
    return responses;
  }

  async save(quiet = false) {
    if (this.busy) return false;
    if (this.uploads) return this.showError("Wait for the attachments to finish uploading."), false;
    if (!this.drafts) return this.showError("This account has no Drafts mailbox."), false;
    const spec = this.spec();
    if (!spec) return false;
    this.busy = true;
    this.dirty = false;
    this.status.textContent = quiet ? "Saving draft…" : "Saving…";
    try {
      await this.store(spec);
      this.error.textContent = "";
      this.status.textContent = `Draft saved at ${new Date().toLocaleTimeString()}`;
      this.emit("saved");
      return true;
    } catch (error) {
      this.dirty = true;
      this.showError(`Draft not saved: ${error.message}`);
      return false;
    } finally {
      this.busy = false;
    }
  }

  async send() {
    if (this.busy) return;
    if (this.uploads) return this.showError("Wait for the attachments to finish uploading.");
    if (!this.drafts) return this.showError("This account has no Drafts mailbox.");
    const spec = this.spec();
    if (!spec) return;
    if (!spec.to && !spec.cc && !spec.bcc) {
      this.to.focus();
      return this.showError("Add at least one recipient.");
    }
    const accountId = this.client.accountId;
    const moved = this.sent ?
      {onSuccessUpdateEmail: {"#send": {[`mailboxIds/${this.drafts}`]: null, [`mailboxIds/${this.sent}`]: true,
        "keywords/$draft": null}}} : {onSuccessDestroyEmail: ["#send"]};
    const submit = ["EmailSubmission/set", {accountId,
      create: {send: {identityId: this.fromSelect.value, emailId: "#draft"}}, ...moved}, "u"];
    this.busy = true;
    this.sendButton.disabled = true;
    this.status.textContent = "Sending…";
    try {
      const responses = await this.store(spec, [submit]);
      const sent = responses.find((r) => r[2] === "u" && r[0] === "EmailSubmission/set");
      if (!sent || !sent[1].created || !sent[1].created.send) {
        this.dirty = false;  // the form is kept as a draft
        const problem = sent ? (sent[1].notCreated || {}).send : null;
        if (problem && (problem.properties || []).includes("identityId")) {
          this.showError("Not sent: you may no longer send from this address; choose another From.");
          await this.reloadIdentities().catch(() => {});
        } else {
          this.showError(`Not sent: ${describe(problem)}`);
        }
        return;
      }
      this.draftId = null;
      const keyword = this.mode === "forward" ? "$forwarded" : this.mode.startsWith("reply") ? "$answered" : null;
      if (keyword && this.original) {
        await this.call([["Email/set", {accountId, update: {[this.original.id]: {[`keywords/${keyword}`]: true}}},
          "k"]]).catch(() => {});
      }
      if (this.app.notify) this.app.notify("Message sent");
      this.emit("sent");
      this.close();
    } catch (error) {
      this.showError(`Not sent: ${error.message}`);
    } finally {
      this.busy = false;
      this.sendButton.disabled = false;
    }
  }

  emit(action) {
    document.dispatchEvent(new CustomEvent("webmail:compose", {detail: {action, draftId: this.draftId}}));
  }

  requestClose() {
    if (!this.dirty && !this.uploads) return this.close();
    this.confirmBar.hidden = false;
    this.confirmBar.querySelector("button").focus();
  }

  hideConfirm() {
    this.confirmBar.hidden = true;
    this.body.focus();
  }

  close() {
    clearInterval(this.timer);
    window.removeEventListener("beforeunload", this.unload);
    this.backdrop.remove();
    if (current === this) current = null;
    this.emit("closed");
    if (this.returnFocus && this.returnFocus.isConnected) this.returnFocus.focus();
  }
}

export async function openCompose(app, options = {}) {
  if (current) {
    if (current.form) current.form.querySelector("input, textarea").focus();
    if (app.notify) app.notify("Finish or close the message being written first");
    return current;
  }
  const compose = new Compose(app, options);
  current = compose;
  try {
    compose.build(await compose.load());
  } catch (error) {
    current = null;
    if (app.notify) app.notify(`Cannot open the editor: ${error.message}`);
    else console.error(error);
    return null;
  }
  return compose;
}
