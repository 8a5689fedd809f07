// The webmail application: sign-in, folders, message list, reader, actions,
// search, real-time updates (EventSource) and keyboard shortcuts.
//
// The object compose.js receives as `app` (openCompose(app, {mode, email})):
//   app.client                 the JMAPClient (jmap.js), signed in
//   app.mailboxes              Mailbox objects (id, name, parentId, role, sortOrder, counts)
//   app.mailboxByRole(role)    the Mailbox with that role ("drafts", "sent", ...) or null
//   app.refresh()              reload folders and the list (also done on every push)
//   app.notify(text)           a short status message (aria-live)
//   app.currentEmail()         the full Email open in the reader, or null
// `email` is that full Email (FULL_PROPERTIES of reader.js with bodyValues); opening an
// Email with $draft from the list calls openCompose(app, {mode: "draft", email}) instead.

import {JMAPClient} from "./jmap.js";
import {FULL_PROPERTIES, renderConversation} from "./reader.js";
import {parseSearch} from "./search.js";
import {shortcut} from "./keys.js";
import {mailboxDepth, orderedMailboxes, messageRow} from "./listview.js";
import {el, $, ROLE_ORDER} from "./util.js";

const PAGE = 40;
const LIST_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "from", "to", "subject", "preview",
                         "receivedAt", "hasAttachment"];
const MAX_BODY = 2 * 1024 * 1024;

class App {
  constructor() {
    this.client = new JMAPClient();
    this.mailboxes = [];
    this.mailboxId = null;
    this.search = "";
    this.threads = true;
    this.items = [];          // [{email, threadSize}]
    this.total = 0;
    this.selected = -1;
    this.conversation = [];   // full Emails shown in the reader
    this.focusId = null;
    this.unsubscribe = null;
    this.refreshTimer = null;
    this.statusTimer = null;
    this.client.onUnauthorized(() => this.showSignin("Your session has ended; sign in again."));
  }

  // --- helpers for compose.js and the views ---
  mailboxByRole(role) {
    return this.mailboxes.find((mailbox) => mailbox.role === role) || null;
  }

  currentEmail() {
    return this.conversation.find((email) => email.id === this.focusId) || null;
  }

  notify(text) {
    const status = $("status");
    status.textContent = text;
    status.classList.add("visible");
    clearTimeout(this.statusTimer);
    this.statusTimer = setTimeout(() => status.classList.remove("visible"), 3500);
  }

  async call(name, args) {
    return this.client.call1(name, {accountId: this.client.accountId, ...args});
  }

  // --- screens ---
  async start() {
    this.bind();
    if (await this.client.restore()) await this.showApp();
    else this.showSignin();
  }

  showSignin(message) {
    if (this.unsubscribe) { this.unsubscribe(); this.unsubscribe = null; }
    delete document.documentElement.dataset.push;
    clearTimeout(this.refreshTimer);
    // nothing of the last account stays in the page (a shared computer)
    this.items = [];
    this.mailboxes = [];
    this.search = "";
    this.selected = -1;
    this.closeReader();
    $("search").value = "";
    $("message-list").replaceChildren();
    $("mailbox-list").replaceChildren();
    $("whoami").textContent = "";
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-password").value = "";
    const error = $("signin-error");
    error.hidden = !message;
    error.textContent = message || "";
    document.title = "Sign in · Webmail";
    $("signin-username").focus();
  }

  async showApp() {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("whoami").textContent = this.client.username;
    document.title = "Webmail";
    await this.loadMailboxes();
    const inbox = this.mailboxByRole("inbox") || this.mailboxes[0];
    this.mailboxId = inbox ? inbox.id : null;
    this.renderMailboxes();
    await this.loadList();
    this.unsubscribe = this.client.onStateChange((changed) => {
      // <html data-push="open|down">: whether live updates flow (tests wait on it; CSS may show it)
      if (changed.connected) document.documentElement.dataset.push = "open";
      if (changed.disconnected) document.documentElement.dataset.push = "down";
      if (changed.connected || changed.Email || changed.Mailbox || changed.Thread) this.scheduleRefresh();
    });
    $("message-list").focus();
  }

  async signIn(event) {
    event.preventDefault();
    const username = $("signin-username").value.trim();
    const password = $("signin-password").value;
    const error = $("signin-error");
    if (!username || !password) {
      error.textContent = "Enter your address and password.";
      error.hidden = false;
      return;
    }
    $("signin-submit").disabled = true;
    try {
      await this.client.login(username, password);
      $("signin-password").value = "";
      await this.showApp();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      $("signin-submit").disabled = false;
    }
  }

  async signOut() {
    try {
      await this.client.logout();
    } catch (e) {
      console.warn("logout", e);
    }
    this.showSignin();
  }

  // --- folders ---
  async loadMailboxes() {
    const result = await this.call("Mailbox/get", {ids: null});
    const byRole = (m) => (m.role && ROLE_ORDER.includes(m.role) ? ROLE_ORDER.indexOf(m.role) : ROLE_ORDER.length);
    this.mailboxes = result.list.sort((a, b) => byRole(a) - byRole(b) || (a.sortOrder || 0) - (b.sortOrder || 0) ||
                                      a.name.localeCompare(b.name));
  }

  renderMailboxes() {
    const list = $("mailbox-list");
    list.replaceChildren(...orderedMailboxes(this.mailboxes).map((mailbox) => {
      const unread = this.threads ? mailbox.unreadThreads : mailbox.unreadEmails;
      const current = !this.search && mailbox.id === this.mailboxId;
      return el("li", {},
        el("button", {type: "button", class: `depth-${Math.min(mailboxDepth(this.mailboxes, mailbox), 2)}`,
                      dataset: {id: mailbox.id, role: mailbox.role || ""},
                      "aria-current": current ? "true" : "false",
                      "aria-label": `${mailbox.name}${unread ? `, ${unread} unread` : ""}`,
                      onclick: () => this.selectMailbox(mailbox.id)},
          el("span", {class: mailbox.role ? `icon role-${mailbox.role}` : "icon", "aria-hidden": "true"}),
          el("span", {class: "name"}, mailbox.name),
          unread ? el("span", {class: "count"}, unread) : null));
    }));
    const move = $("move-to");
    move.replaceChildren(el("option", {value: ""}, "Move to\u2026"),
      ...orderedMailboxes(this.mailboxes).map((m) => el("option", {value: m.id}, "\u00A0".repeat(2 * mailboxDepth(this.mailboxes, m)) + m.name)));
    const total = this.mailboxes.reduce((sum, m) => sum + (m.role === "inbox" ? m.unreadEmails : 0), 0);
    document.title = total ? `(${total}) Webmail` : "Webmail";
  }

  async selectMailbox(id) {
    this.mailboxId = id;
    this.search = "";
    $("search").value = "";
    $("mailboxes").classList.remove("open");
    $("nav-toggle").setAttribute("aria-expanded", "false");
    this.closeReader();
    this.renderMailboxes();
    await this.loadList();
  }

  // --- message list ---
  listFilter() {
    const filter = this.search ? parseSearch(this.search, this.mailboxes) : null;
    return filter || {inMailbox: this.mailboxId};
  }

  // One list load at a time, in call order: a push refresh (keep) and a scroll append
  // running together would otherwise let the older answer replace the newer list.
  loadList(options = {}) {
    const run = () => this.loadListNow(options);
    this.listQueue = (this.listQueue || Promise.resolve()).then(run, run);
    return this.listQueue;
  }

  viewKey() {
    return JSON.stringify([this.client.accountId, this.mailboxId, this.search, this.threads]);
  }

  async loadListNow({append = false, keep = false} = {}) {
    const position = append ? this.items.length : 0;
    const limit = keep ? Math.max(PAGE, this.items.length) : PAGE;
    const accountId = this.client.accountId;
    const view = this.viewKey();
    const responses = await this.client.call([
      ["Email/query", {accountId, filter: this.listFilter(), sort: [{property: "receivedAt", isAscending: false}],
                       collapseThreads: this.threads, position, limit, calculateTotal: true}, "q"],
      ["Email/get", {accountId, "#ids": {resultOf: "q", name: "Email/query", path: "/ids"},
                     properties: LIST_PROPERTIES}, "g"],
      ["Thread/get", {accountId, "#ids": {resultOf: "g", name: "Email/get", path: "/list/*/threadId"}}, "t"],
    ]);
    // the folder, search or threading changed while this answer was on its way: it belongs
    // to the old view (its title would be the new one's), and the new view's load follows
    if (view !== this.viewKey()) return;
    const [query, got, threads] = responses.map((r) => r[1]);
    if (responses[0][0] === "error") {
      this.notify(`Search failed: ${query.description || query.type}`);
      return;
    }
    const byId = new Map(got.list.map((e) => [e.id, e]));
    const sizes = new Map((threads.list || []).map((t) => [t.id, t.emailIds.length]));
    const items = query.ids.filter((id) => byId.has(id)).map((id) => {
      const email = byId.get(id);
      return {email, threadSize: sizes.get(email.threadId) || 1};
    });
    // the selection follows its conversation (a new reply changes the row's Email) or its Email
    const key = (item) => (this.threads ? item.email.threadId : item.email.id);
    const selectedKey = this.selected >= 0 && this.items[this.selected] ? key(this.items[this.selected]) : null;
    this.items = append ? this.items.concat(items) : items;
    this.total = query.total;
    if (!append) {
      this.selected = selectedKey ? this.items.findIndex((item) => key(item) === selectedKey) : -1;
    }
    this.renderList();
  }

  listTitle() {
    if (this.search) return `Search: ${this.search}`;
    const mailbox = this.mailboxes.find((m) => m.id === this.mailboxId);
    return mailbox ? mailbox.name : "";
  }

  renderList() {
    $("list-title").textContent = this.listTitle();
    const list = $("message-list");
    list.replaceChildren(...this.items.map((item, index) => messageRow(this, item, index)));
    $("list-empty").hidden = this.items.length > 0;
    $("load-more").hidden = this.items.length >= this.total;
    this.markActive();
  }

  // the listbox keeps DOM focus; aria-activedescendant names the selected row for
  // screen readers (WAI-ARIA listbox pattern), and CSS outlines it while focused
  markActive() {
    const list = $("message-list");
    const li = this.selected >= 0 ? list.children[this.selected] : null;
    if (li) list.setAttribute("aria-activedescendant", li.id);
    else list.removeAttribute("aria-activedescendant");
  }

  select(index) {
    if (index < 0 || index >= this.items.length) return;
    this.selected = index;
    for (const li of $("message-list").children) {
      li.setAttribute("aria-selected", li.dataset.index === String(index) ? "true" : "false");
    }
    const li = $("message-list").children[index];
    if (li) li.scrollIntoView({block: "nearest"});
    this.markActive();
  }

  // --- reader ---
  async open({focusId = null} = {}) {
    const item = this.items[this.selected];
    if (!item) return;
    if (item.email.keywords.$draft) return this.compose("draft", item.email);  // continue writing it
    const ticket = this.openTicket = (this.openTicket || 0) + 1;  // j j j: only the last one shows
    let ids = [item.email.id];
    if (this.threads) {
      const thread = await this.call("Thread/get", {ids: [item.email.threadId]});
      if (thread.list.length) ids = thread.list[0].emailIds;
    }
    const got = await this.call("Email/get", {ids, properties: FULL_PROPERTIES, fetchAllBodyValues: true,
                                              maxBodyValueBytes: MAX_BODY});
    if (ticket !== this.openTicket) return;
    this.openThreadSize = ids.length;
    const hidden = ["trash", "junk"].map((role) => this.mailboxByRole(role)).filter(Boolean)
      .filter((m) => m.id !== this.mailboxId || this.search).map((m) => m.id);
    this.conversation = got.list.filter((e) => e.id === item.email.id || !hidden.some((id) => e.mailboxIds[id]))
      .sort((a, b) => a.receivedAt.localeCompare(b.receivedAt));
    this.focusId = focusId && this.conversation.some((e) => e.id === focusId) ? focusId : item.email.id;
    $("reader").hidden = false;
    $("app").classList.add("reading");
    renderConversation(this, $("conversation"), this.conversation, this.focusId);
    this.updateToolbar();
    const unread = this.conversation.filter((e) => !e.keywords.$seen).map((e) => e.id);
    if (unread.length) {
      await this.setKeyword(unread, "$seen", true, {quiet: true});
    }
  }

  focusEmail(id) {
    this.focusId = id;
    this.updateToolbar();
  }

  closeReader() {
    this.conversation = [];
    this.focusId = null;
    $("reader").hidden = true;
    $("app").classList.remove("reading");
    $("conversation").replaceChildren();
  }

  updateToolbar() {
    const email = this.currentEmail();
    if (!email) return;
    $("toggle-read").textContent = email.keywords.$seen ? "Mark unread" : "Mark read";
    const flagged = !!email.keywords.$flagged;
    $("toggle-flag").textContent = flagged ? "Unflag" : "Flag";
    $("toggle-flag").setAttribute("aria-pressed", String(flagged));
    const junk = this.mailboxByRole("junk");
    $("spam").textContent = junk && email.mailboxIds[junk.id] ? "Not spam" : "Spam";
    $("move-to").value = "";
  }

  // --- actions ---
  async setKeyword(ids, keyword, on, {quiet = false} = {}) {
    const update = {};
    for (const id of ids) update[id] = {[`keywords/${keyword}`]: on ? true : null};
    const result = await this.call("Email/set", {update});
    await this.loadMailboxes();  // the unread counts, without waiting for the push
    this.renderMailboxes();
    for (const email of this.conversation.concat(this.items.map((item) => item.email))) {
      if (ids.includes(email.id)) {
        if (on) email.keywords[keyword] = true;
        else delete email.keywords[keyword];
      }
    }
    if (result.notUpdated && Object.keys(result.notUpdated).length) this.notify("Some messages could not be changed");
    else if (!quiet) this.notify("Done");
    this.renderList();
    this.updateToolbar();
  }

  async toggleRead() {
    const email = this.currentEmail();
    if (email) await this.setKeyword([email.id], "$seen", !email.keywords.$seen);
  }

  async toggleFlag() {
    const email = this.currentEmail();
    if (email) await this.setKeyword([email.id], "$flagged", !email.keywords.$flagged);
  }

  // the Emails an action on the open conversation applies to: those in the current mailbox
  actionTargets() {
    if (!this.conversation.length) return [];
    if (this.search || !this.threads) return [this.focusId];
    const inHere = this.conversation.filter((e) => e.mailboxIds[this.mailboxId]).map((e) => e.id);
    return inHere.length ? inHere : [this.focusId];
  }

  async moveTo(mailboxId, verb) {
    const ids = this.actionTargets();
    const target = this.mailboxes.find((m) => m.id === mailboxId);
    if (!ids.length || !target) return;
    const update = {};
    for (const id of ids) update[id] = {mailboxIds: {[mailboxId]: true}};
    const result = await this.call("Email/set", {update});
    if (result.notUpdated && Object.keys(result.notUpdated).length) {
      const error = Object.values(result.notUpdated)[0];
      this.notify(`Could not move: ${error.description || error.type}`);
      return;
    }
    this.notify(`${verb || "Moved"} to ${target.name}`);
    this.afterRemoval();
  }

  async afterRemoval() {
    const index = this.selected;
    this.closeReader();
    await this.refresh();
    this.select(Math.min(index, this.items.length - 1));
  }

  async remove() {
    const trash = this.mailboxByRole("trash");
    if (trash && trash.id !== this.mailboxId) return this.moveTo(trash.id, "Moved");
    const ids = this.actionTargets();
    if (!ids.length || !window.confirm("Delete permanently?")) return;
    await this.call("Email/set", {destroy: ids});
    this.notify("Deleted");
    await this.afterRemoval();
  }

  async spam() {
    const email = this.currentEmail();
    const junk = this.mailboxByRole("junk");
    const inbox = this.mailboxByRole("inbox");
    if (!email || !junk || !inbox) return;
    if (email.mailboxIds[junk.id]) await this.moveTo(inbox.id, "Not spam: moved");
    else await this.moveTo(junk.id, "Spam: moved");
  }

  async compose(mode, draft = null) {
    const email = mode === "new" ? null : draft || this.currentEmail();
    if (mode !== "new" && !email) return;
    let module;
    try {
      module = await import("./compose.js");
    } catch (e) {
      this.notify("Compose is not available");
      return;
    }
    module.openCompose(this, {mode, email});
  }

  // --- search and updates ---
  async runSearch(event) {
    event.preventDefault();
    this.search = $("search").value.trim();
    this.closeReader();
    this.selected = -1;
    this.renderMailboxes();
    await this.loadList();
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh().catch((e) => console.warn("refresh", e)), 150);
  }

  async refresh() {
    if (!this.client.signedIn) return;
    await this.loadMailboxes();
    if (!this.mailboxes.some((m) => m.id === this.mailboxId)) {
      const inbox = this.mailboxByRole("inbox");
      this.mailboxId = inbox ? inbox.id : null;
    }
    this.renderMailboxes();
    await this.loadList({keep: true});
    // a new message in the open conversation shows up in the reader too
    const item = this.items[this.selected];
    if (this.conversation.length && item && this.threads && item.email.threadId === this.conversation[0].threadId &&
        item.threadSize !== this.openThreadSize && !this.search) {
      await this.open({focusId: this.focusId});
    }
  }

  // --- wiring ---
  bind() {
    $("signin-form").addEventListener("submit", (e) => this.signIn(e));
    $("signout").addEventListener("click", () => this.signOut());
    $("search-form").addEventListener("submit", (e) => this.runSearch(e));
    $("search").addEventListener("search", (e) => { if (!e.target.value) this.runSearch(e); });
    $("compose-button").addEventListener("click", () => this.compose("new"));
    $("threads-toggle").addEventListener("change", (e) => {
      this.threads = e.target.checked;
      this.selected = -1;
      this.closeReader();
      this.renderMailboxes();
      this.loadList();
    });
    $("load-more").addEventListener("click", () => this.loadList({append: true}));
    $("message-list").addEventListener("scroll", (e) => {
      const list = e.target;
      if (list.scrollTop + list.clientHeight > list.scrollHeight - 40 && this.items.length < this.total &&
          !this.loadingMore) {
        this.loadingMore = true;
        this.loadList({append: true}).finally(() => { this.loadingMore = false; });
      }
    });
    $("reply").addEventListener("click", () => this.compose("reply"));
    $("reply-all").addEventListener("click", () => this.compose("replyAll"));
    $("forward").addEventListener("click", () => this.compose("forward"));
    $("toggle-read").addEventListener("click", () => this.toggleRead());
    $("toggle-flag").addEventListener("click", () => this.toggleFlag());
    $("delete").addEventListener("click", () => this.remove());
    $("spam").addEventListener("click", () => this.spam());
    $("move-to").addEventListener("change", (e) => { if (e.target.value) this.moveTo(e.target.value); });
    $("back").addEventListener("click", () => this.closeReader());
    $("nav-toggle").addEventListener("click", () => {
      const open = $("mailboxes").classList.toggle("open");
      $("nav-toggle").setAttribute("aria-expanded", String(open));
    });
    document.addEventListener("keydown", (e) => shortcut(this, e));
    // compose.js announces sent and saved messages: show them without waiting for the push
    document.addEventListener("webmail:compose", (e) => {
      if (e.detail && e.detail.action !== "closed") this.scheduleRefresh();
    });
  }
}

const app = new App();
window.addEventListener("unhandledrejection", (event) => {
  app.notify(event.reason && event.reason.message ? event.reason.message : "Something went wrong");
});
app.start();
