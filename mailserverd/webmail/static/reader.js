// The reader: one conversation (the Emails of a Thread) as a stack of messages;
// plain text as text, HTML sanitised (sanitize.js) into a sandboxed srcdoc iframe
// without allow-scripts/allow-same-origin/allow-forms; attachments as download links.

import {sanitize, frameDocument} from "./sanitize.js";
import {el, addressText, addressList, longDate, shortDate, formatSize} from "./util.js";

export const FULL_PROPERTIES = [
  "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
  "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt",
  "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody", "attachments",
];
const MAX_INLINE_IMAGE = 4 * 1024 * 1024;
// the iframe may open links in a new top-level context, nothing else
const SANDBOX = "allow-popups allow-popups-to-escape-sandbox";

function escapeHTML(text) {
  return text.replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// Plain text with its http(s) URLs as links (new tab, no opener, no referrer); text nodes only.
const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

function linkified(text) {
  const pre = el("pre", {class: "text"});
  let last = 0;
  for (const match of text.matchAll(URL_IN_TEXT)) {
    pre.append(text.slice(last, match.index),
               el("a", {href: match[0], target: "_blank", rel: "noopener noreferrer"}, match[0]));
    last = match.index + match[0].length;
  }
  pre.append(text.slice(last));
  return pre;
}

function bodyValue(email, part) {
  const value = email.bodyValues && email.bodyValues[part.partId];
  return value ? value.value : "";
}

function isHTML(email) {
  return (email.htmlBody || []).some((part) => part.type === "text/html");
}

function plainText(email) {
  const parts = (email.textBody || []).filter((part) => part.type && part.type.startsWith("text/"));
  return parts.map((part) => bodyValue(email, part)).join("\n\n");
}

function htmlSource(email) {
  return (email.htmlBody || []).map((part) => {
    if (part.type === "text/html") return bodyValue(email, part);
    if (part.type && part.type.startsWith("text/")) return `<pre>${escapeHTML(bodyValue(email, part))}</pre>`;
    return "";
  }).join("\n");
}

// A transient failure (network, 429, 5xx) is retried twice: a missing inline image
// is never fetched again once the message is drawn.
async function fetchBlob(url, attempts = 3) {
  for (let attempt = 1; ; attempt++) {
    let response = null;
    try {
      response = await fetch(url, {credentials: "same-origin"});
    } catch (e) {
      if (attempt >= attempts) throw e;
    }
    if (response && response.ok) return await response.blob();
    if (response && response.status < 500 && response.status !== 429) return null;
    if (attempt >= attempts) return null;
    await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
  }
}

async function blobAsDataURL(app, part) {
  const blob = await fetchBlob(app.client.downloadUrl(part.blobId, part.name || "image", part.type));
  if (!blob) return null;
  return await new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => resolve(null);
    reader.readAsDataURL(new Blob([blob], {type: part.type}));
  });
}

// cid -> data: URL for the inline images an HTML body references (RFC 2392)
async function inlineImages(app, email, html) {
  const map = new Map();
  if (!/cid:/i.test(html)) return map;
  const parts = [...(email.attachments || []), ...(email.htmlBody || [])];
  for (const part of parts) {
    if (!part.cid || !part.type || !part.type.startsWith("image/") || part.size > MAX_INLINE_IMAGE) continue;
    const cid = part.cid.replace(/^<|>$/g, "");
    if (map.has(cid)) continue;
    try {
      const data = await blobAsDataURL(app, part);
      if (data) map.set(cid, data);
    } catch (e) {
      console.warn("inline image", e);
    }
  }
  return map;
}

function renderHTML(app, email, body, notice) {
  const source = htmlSource(email);
  let loadImages = false;
  let cids = new Map();
  const frame = el("iframe", {sandbox: SANDBOX, title: "Message body", referrerpolicy: "no-referrer"});
  const draw = () => {
    const clean = sanitize(source, {loadImages, cid: (cid) => cids.get(decodeURIComponent(cid))});
    frame.srcdoc = frameDocument(clean.html, loadImages);
    notice.replaceChildren();
    notice.hidden = clean.blockedImages === 0;
    if (clean.blockedImages) {
      notice.append(`Remote images are blocked (${clean.blockedImages}).`,
                    el("button", {type: "button", class: "load-images",
                                  onclick: () => { loadImages = true; draw(); }}, "Load images"));
    }
  };
  // One srcdoc write when the body references inline images: a second write while the
  // first document is still loading was seen to leave the first one showing.
  if (!/cid:/i.test(source)) {
    draw();
    body.append(frame);
    return;
  }
  body.append(frame);
  inlineImages(app, email, source).catch(() => new Map()).then((map) => { cids = map; draw(); });
}

function attachmentList(app, email) {
  const items = (email.attachments || []).filter((part) => !(part.disposition === "inline" && part.cid &&
                                                             isHTML(email)));
  if (!items.length) return null;
  return el("ul", {class: "attachments", "aria-label": "Attachments"}, items.map((part) => {
    const name = part.name || "attachment";
    return el("li", {}, el("a", {href: app.client.downloadUrl(part.blobId, name, part.type || "application/octet-stream"),
                                 download: name, "aria-label": `Download ${name}`},
                           el("span", {class: "glyph clip", "aria-hidden": "true"}), name,
                           el("span", {class: "size"}, formatSize(part.size || 0))));
  }));
}

export function renderEmail(app, email, expanded) {
  const article = el("article", {class: "email" + (expanded ? "" : " collapsed"), dataset: {id: email.id},
                                 "aria-label": `Message from ${addressText((email.from || [])[0])}`});
  const header = el("button", {type: "button", class: "email-header", "aria-expanded": String(expanded)},
    el("span", {class: "from"}, addressList(email.from) || "(no sender)"),
    el("span", {class: "date", title: longDate(email.receivedAt)}, shortDate(email.receivedAt)),
    el("span", {class: "to"}, "To: ", addressList(email.to) || "(undisclosed)",
       email.cc && email.cc.length ? `  Cc: ${addressList(email.cc)}` : ""),
    el("span", {class: "snippet"}, email.preview || ""));
  const notice = el("div", {class: "images-blocked", role: "note"});
  notice.hidden = true;
  const body = el("div", {class: "email-body"});
  let drawn = false;
  const draw = () => {
    if (drawn) return;
    drawn = true;
    if (isHTML(email)) renderHTML(app, email, body, notice);
    else body.append(linkified(plainText(email)));
  };
  header.addEventListener("click", () => {
    const collapsed = article.classList.toggle("collapsed");
    header.setAttribute("aria-expanded", String(!collapsed));
    if (!collapsed) {
      draw();
      app.focusEmail(email.id);
    }
  });
  article.append(header, notice, body);
  const attachments = attachmentList(app, email);
  if (attachments) article.append(attachments);
  if (expanded) draw();
  return article;
}

// emails: full Email objects of one conversation, oldest first; focusId expanded
export function renderConversation(app, container, emails, focusId) {
  container.replaceChildren();
  if (!emails.length) return;
  const subject = emails[emails.length - 1].subject || "(no subject)";
  container.append(el("h2", {class: "subject", id: "reader-subject"}, subject));
  for (const email of emails) {
    const unread = !(email.keywords && email.keywords.$seen);
    container.append(renderEmail(app, email, email.id === focusId || unread));
  }
  const focused = container.querySelector(`article[data-id="${CSS.escape(focusId)}"]`);
  if (focused && emails.length > 1) focused.scrollIntoView({block: "nearest"});
}
