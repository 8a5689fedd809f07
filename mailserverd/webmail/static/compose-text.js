// Text helpers of compose.js that touch no page: address parsing and formatting
// (RFC 5322 3.4, the forms people type), and what a reply or forward starts with
// (RFC 5322 3.6.4 In-Reply-To/References, "Re: " once, quoted text).

// ---- addresses (RFC 5322 3.4, the forms people type) ----

const LOCAL = /^[^\s@<>(),;:"\\[\]]+$/;
const DOMAIN = /^[^\s@<>(),;:"\\[\].]+(\.[^\s@<>(),;:"\\[\].]+)*$/;

export function isAddress(text) {
  const at = text.lastIndexOf("@");
  return at > 0 && LOCAL.test(text.slice(0, at)) && DOMAIN.test(text.slice(at + 1));
}

// "A <a@x>, \"Last, First\" <b@y>; c@z" -> {list: [{name, email}], bad: [text]}
export function parseAddresses(text) {
  const tokens = [];
  let token = "", quoted = false, angle = false;
  for (const ch of text || "") {
    if (ch === '"' && !angle) quoted = !quoted;
    else if (ch === "<" && !quoted) angle = true;
    else if (ch === ">" && !quoted) angle = false;
    if ((ch === "," || ch === ";") && !quoted && !angle) {
      tokens.push(token);
      token = "";
    } else {
      token += ch;
    }
  }
  tokens.push(token);
  const list = [], bad = [];
  for (const raw of tokens.map((t) => t.trim()).filter(Boolean)) {
    const match = raw.match(/^(.*)<([^<>]*)>$/s);
    let name = null, address = raw;
    if (match) {
      name = match[1].trim().replace(/^"(.*)"$/s, "$1").replace(/\\(.)/g, "$1").trim() || null;
      address = match[2].trim();
    }
    if (isAddress(address)) list.push({name, email: address});
    else bad.push(raw);
  }
  return {list, bad};
}

export function formatAddress(item) {
  if (!item.name) return item.email;
  const name = /[(),.:;<>@[\]\\"]/.test(item.name) ?
    '"' + item.name.replace(/(["\\])/g, "\\$1") + '"' : item.name;
  return `${name} <${item.email}>`;
}

export function formatList(list) {
  return (list || []).map(formatAddress).join(", ");
}

function uniqueAddresses(list, skip) {
  const seen = new Set(skip), out = [];
  for (const item of list) {
    const key = item.email.toLowerCase();
    if (!seen.has(key)) {
      seen.add(key);
      out.push({name: item.name || null, email: item.email});
    }
  }
  return out;
}

// ---- what a reply or forward starts with ----

export function prefixed(subject, prefix, pattern) {
  const text = (subject || "").trim();
  return pattern.test(text) ? text : prefix + text;
}

function htmlToText(html) {
  // DOMParser documents are inert: no script runs and nothing loads.
  const doc = new DOMParser().parseFromString(html, "text/html");
  doc.querySelectorAll("script, style, head").forEach((node) => node.remove());
  const out = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) out.push(node.data.replace(/\s+/g, " "));
    const block = node.nodeType === Node.ELEMENT_NODE &&
      /^(P|DIV|BR|LI|TR|H[1-6]|BLOCKQUOTE|PRE|TABLE|UL|OL)$/.test(node.nodeName);
    if (block) out.push("\n");
    node.childNodes.forEach(walk);
  };
  walk(doc.body || doc.documentElement);
  return out.join("").replace(/[ \t]+\n/g, "\n").replace(/\n{3,}/g, "\n\n").trim();
}

export function bodyText(email) {
  const values = email.bodyValues || {};
  const parts = (email.textBody && email.textBody.length ? email.textBody : email.htmlBody) || [];
  return parts.map((part) => {
    const value = (values[part.partId] || {}).value || "";
    return part.type === "text/html" ? htmlToText(value) : value;
  }).join("\n").replace(/\r\n/g, "\n");
}

function when(email) {
  const date = new Date(email.sentAt || email.receivedAt);
  return isNaN(date) ? "an unknown date" : date.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

export function quote(email) {
  const from = (email.from || [])[0];
  const who = from ? (from.name || from.email) : "someone";
  const lines = bodyText(email).replace(/\n+$/, "").split("\n");
  return `\n\nOn ${when(email)}, ${who} wrote:\n` + lines.map((l) => (l ? "> " + l : ">")).join("\n") + "\n";
}

function forwarded(email) {
  const head = ["---------- Forwarded message ----------", `From: ${formatList(email.from)}`,
    `Date: ${when(email)}`, `Subject: ${email.subject || ""}`, `To: ${formatList(email.to)}`];
  if (email.cc && email.cc.length) head.push(`Cc: ${formatList(email.cc)}`);
  return "\n\n" + head.join("\n") + "\n\n" + bodyText(email) + "\n";
}

// The starting fields for a mode, given the source Email and the user's own addresses.
export function initialFields(mode, email, own) {
  const mine = (item) => own.has(item.email.toLowerCase());
  const fields = {to: [], cc: [], bcc: [], subject: "", body: "", attachments: [], inReplyTo: null,
    references: null, from: null};
  if (!email) return fields;
  if (mode === "draft") {
    Object.assign(fields, {to: email.to || [], cc: email.cc || [], bcc: email.bcc || [],
      subject: email.subject || "", body: bodyText(email), inReplyTo: email.inReplyTo,
      references: email.references, from: (email.from || [])[0] || null});
    fields.attachments = (email.attachments || []).map(attachmentOf);
    return fields;
  }
  if (mode === "forward") {
    fields.subject = prefixed(email.subject, "Fwd: ", /^(fwd?|fw):/i);
    fields.body = forwarded(email);
    // a plain-text forward: inline parts (cid images) travel as ordinary attachments
    fields.attachments = (email.attachments || []).map((part) => ({...attachmentOf(part),
      disposition: "attachment", cid: null}));
    return fields;
  }
  let to = email.replyTo && email.replyTo.length ? email.replyTo : email.from || [];
  if (to.length && to.every(mine)) to = email.to || [];  // a reply to one's own message
  fields.to = uniqueAddresses(to, []);
  if (mode === "replyAll") {
    const skip = [...own, ...fields.to.map((a) => a.email.toLowerCase())];
    fields.cc = uniqueAddresses([...(email.to || []), ...(email.cc || [])].filter((a) => !mine(a)), skip);
  }
  fields.subject = prefixed(email.subject, "Re: ", /^re:/i);
  fields.body = quote(email);
  // RFC 5322 3.6.4; ids not of the form left@right (old software) are left out, as the
  // server refuses them in a created Email
  const valid = (id) => /^[^<>\s]*@[^<>\s]*$/.test(id);
  if (email.messageId && email.messageId.length && valid(email.messageId[0])) {
    fields.inReplyTo = email.messageId.slice(0, 1);
    const parent = email.references || (email.inReplyTo && email.inReplyTo.length === 1 ? email.inReplyTo : []);
    fields.references = [...parent.filter((id) => id !== email.messageId[0] && valid(id)), email.messageId[0]];
  }
  const addressed = [...(email.to || []), ...(email.cc || [])].find(mine);
  fields.from = addressed || null;
  return fields;
}

export function attachmentOf(part) {
  return {blobId: part.blobId, type: part.type || "application/octet-stream",
    name: part.name || "attachment", size: part.size || 0, disposition: part.disposition || "attachment",
    cid: part.cid || null};
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
