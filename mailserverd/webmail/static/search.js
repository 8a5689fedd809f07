// The search box's language, the same as GET /v1/search?q= (mailserverd/jmap/rest.py
// parse_search): words (the JMAP text condition), from: to: cc: bcc: subject: body:,
// is:unread|read|flagged|unflagged, in:FOLDER (name or role), has:attachment,
// before:/after:YYYY-MM-DD; "quoted phrases" stay one word. All conditions must hold.
//
// parseSearch(text, mailboxes) -> a JMAP Email/query FilterCondition or FilterOperator
// (RFC 8621 4.4.1), or null for an empty search.

const DATE = /^\d{4}-\d{2}-\d{2}$/;

export function splitWords(text) {
  const words = [];
  const pattern = /(?:[^\s"]+|"[^"]*")+/g;
  for (const match of text.matchAll(pattern)) {
    words.push(match[0].replace(/"/g, ""));
  }
  return words.filter((word) => word.length);
}

function mailboxNamed(value, mailboxes) {
  const wanted = value.toLowerCase();
  const found = mailboxes.find((m) => m.name.toLowerCase() === wanted) ||
    mailboxes.find((m) => (m.role || "") === wanted);
  return found ? found.id : null;
}

export function parseSearch(text, mailboxes = []) {
  const conditions = [];
  for (const word of splitWords(text || "")) {
    const colon = word.indexOf(":");
    const key = colon > 0 ? word.slice(0, colon).toLowerCase() : "";
    const value = colon > 0 ? word.slice(colon + 1) : "";
    const lower = value.toLowerCase();
    if (["from", "to", "cc", "bcc", "subject", "body"].includes(key) && value) {
      conditions.push({[key]: value});
    } else if (key === "is" && ["unread", "read", "flagged", "unflagged"].includes(lower)) {
      const keyword = lower.endsWith("flagged") ? "$flagged" : "$seen";
      const present = lower === "read" || lower === "flagged";
      conditions.push({[present ? "hasKeyword" : "notKeyword"]: keyword});
    } else if (key === "in" && value && mailboxNamed(value, mailboxes)) {
      conditions.push({inMailbox: mailboxNamed(value, mailboxes)});
    } else if (key === "has" && lower === "attachment") {
      conditions.push({hasAttachment: true});
    } else if ((key === "before" || key === "after") && DATE.test(value)) {
      conditions.push({[key]: `${value}T00:00:00Z`});
    } else {
      conditions.push({text: word});
    }
  }
  if (!conditions.length) return null;
  return conditions.length === 1 ? conditions[0] : {operator: "AND", conditions};
}
