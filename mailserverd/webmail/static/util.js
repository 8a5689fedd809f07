// Small DOM and formatting helpers shared by the webmail modules.

// el("li", {class: "x", dataset: {id}, onclick: f}, child, "text", ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

export function addressText(address) {
  if (!address) return "";
  return address.name ? address.name : (address.email || "");
}

export function addressFull(address) {
  if (!address) return "";
  if (address.name && address.email) return `${address.name} <${address.email}>`;
  return address.email || address.name || "";
}

export function addressList(list) {
  return (list || []).map(addressFull).join(", ");
}

export function shortDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const now = new Date();
  if (date.toDateString() === now.toDateString()) {
    return date.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"});
  }
  if (date.getFullYear() === now.getFullYear()) {
    return date.toLocaleDateString(undefined, {month: "short", day: "numeric"});
  }
  return date.toLocaleDateString(undefined, {year: "numeric", month: "short", day: "numeric"});
}

export function longDate(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// Folders with these roles (RFC 8621 2, RFC 6154) come first, in this order; icons are in style.css.
export const ROLE_ORDER = ["inbox", "drafts", "sent", "archive", "junk", "trash"];
