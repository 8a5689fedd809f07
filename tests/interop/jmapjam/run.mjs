// The jmap-jam client (npm) against a running mailserverd, driven by
// tests/interop/test_jmap_jam.py. Environment: JMAP_SESSION_URL (https URL of
// /.well-known/jmap), JMAP_TOKEN (a Bearer token from `mailserverctl token
// create`), JMAP_TO (another local user to send to), JMAP_SUBJECT (the subject
// of the message the test delivered over SMTP). The daemon's certificate comes
// through NODE_EXTRA_CA_CERTS; TLS verification stays on.
// Prints one JSON object with what each step saw; the test asserts on it.
import { JamClient } from "jmap-jam";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const out = {};
const jam = new JamClient({ sessionUrl: env("JMAP_SESSION_URL"), bearerToken: env("JMAP_TOKEN") });

async function step(name, body) {
  try {
    out[name] = await body();
  } catch (error) {
    const detail = error instanceof Error ? `${error.message} ${error.cause ?? ""}` : error;
    out[name] = { error: detail };
  }
}

const session = await jam.session;
const accountId = await jam.getPrimaryAccount();
out.session = { username: session.username, accountId, apiUrl: session.apiUrl,
                capabilities: Object.keys(session.capabilities).sort() };

// Mailbox/query by role + Mailbox/get by back-reference (requestMany, RFC 8620 3.7)
let inboxId, sentId;
await step("mailboxes", async () => {
  const [{ all }] = await jam.requestMany((t) => {
    const query = t.Mailbox.query({ accountId });
    const all = t.Mailbox.get({ accountId, ids: query.$ref("/ids"), properties: ["name", "role", "totalEmails"] });
    return { query, all };
  });
  inboxId = all.list.find((m) => m.role === "inbox")?.id;
  sentId = all.list.find((m) => m.role === "sent")?.id;
  return all.list.map(({ name, role, totalEmails }) => ({ name, role, totalEmails }));
});

// Email/query (newest first) + Email/get with text bodies of what the test delivered
let emailId;
await step("emails", async () => {
  const [{ get }] = await jam.requestMany((t) => {
    const query = t.Email.query({ accountId, filter: { inMailbox: inboxId, subject: env("JMAP_SUBJECT") },
                                  sort: [{ property: "receivedAt", isAscending: false }], limit: 50 });
    const get = t.Email.get({ accountId, ids: query.$ref("/ids"),
                              properties: ["id", "subject", "from", "keywords", "textBody", "bodyValues", "preview"],
                              fetchTextBodyValues: true });
    return { query, get };
  });
  const email = get.list[0];
  emailId = email.id;
  return { count: get.list.length, subject: email.subject, from: email.from,
           text: email.bodyValues[email.textBody[0].partId].value, preview: email.preview };
});

// Email/set keywords (patch form), then read them back with jam.api
await step("keywords", async () => {
  const [set] = await jam.api.Email.set({ accountId, update: { [emailId]: { "keywords/$seen": true, "keywords/$flagged": true } } });
  const [got] = await jam.api.Email.get({ accountId, ids: [emailId], properties: ["keywords"] });
  return { updated: Object.keys(set.updated ?? {}), keywords: got.list[0].keywords };
});

// Upload a message as a blob and Email/import it into INBOX
await step("import", async () => {
  const raw = "From: Jam <jam@remote.test>\r\nTo: alice@example.test\r\nSubject: imported by jam\r\n"
    + "Message-ID: <jam-import@remote.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\nimported body\r\n";
  const blob = await jam.uploadBlob(accountId, new Blob([raw], { type: "message/rfc822" }));
  // receivedAt as JavaScript writes it (toISOString: milliseconds, "Z")
  const [imported] = await jam.api.Email.import({ accountId, emails: {
    one: { blobId: blob.blobId, mailboxIds: { [inboxId]: true }, keywords: { $seen: true },
           receivedAt: new Date(Date.UTC(2026, 11, 5, 10, 0, 0)).toISOString() } } });
  const created = imported.created?.one;
  const [got] = await jam.api.Email.get({ accountId, ids: [created.id], properties: ["subject", "mailboxIds", "keywords", "size", "receivedAt"] });
  const download = await jam.downloadBlob({ accountId, blobId: blob.blobId, mimeType: "message/rfc822", fileName: "m.eml" });
  const asText = await jam.downloadBlob({ accountId, blobId: blob.blobId, mimeType: "text/plain; charset=utf-8", fileName: "m.txt" });
  return { blobType: blob.type, blobSize: blob.size, email: got.list[0], notCreated: imported.notCreated ?? null,
           downloaded: (await download.text()) === raw, textType: asText.headers.get("content-type") };
});

// Send a message with an uploaded attachment to another local user: Email/set create
// with a bodyStructure (RFC 8621 4.6),
// then EmailSubmission/set naming it "#draft" through the request's createdIds (RFC 8620
// 3.3) with onSuccessUpdateEmail (RFC 8621 7.5). Two requests, because the implicit
// Email/set answer shares the EmailSubmission/set call id and jam's requestMany keys
// responses by call id (the second would hide the first).
await step("submission", async () => {
  const attachment = await jam.uploadBlob(accountId, new Blob(["attachment from jam\n"], { type: "text/plain" }));
  const [identities] = await jam.api.Identity.get({ accountId });
  const identity = identities.list[0];
  const [created] = await jam.api.Email.set({ accountId, create: { draft: {
    mailboxIds: { [sentId]: true }, keywords: { $draft: true, $seen: true },
    from: [{ name: identity.name, email: identity.email }], to: [{ email: env("JMAP_TO") }],
    subject: "sent by jam",
    bodyStructure: { type: "multipart/mixed", subParts: [
      { partId: "text", type: "text/plain" },
      { blobId: attachment.blobId, type: "text/plain", name: "jam.txt", disposition: "attachment" }] },
    bodyValues: { text: { value: "hello from jmap-jam\n" } } } } });
  const emailId = created.created?.draft?.id;
  const [submitted, meta] = await jam.api.EmailSubmission.set(
    { accountId, create: { send: { identityId: identity.id, emailId: "#draft" } },
      onSuccessUpdateEmail: { "#send": { "keywords/$draft": null } } },
    { createdIds: { draft: emailId } });
  const [after] = await jam.api.Email.get({ accountId, ids: [emailId], properties: ["keywords", "mailboxIds"] });
  return { emailCreated: Object.keys(created.created ?? {}), notCreated: created.notCreated ?? null,
           submitted: Object.keys(submitted.created ?? {}), notSubmitted: submitted.notCreated ?? null,
           undoStatus: submitted.created?.send?.undoStatus ?? null, createdIds: Object.keys(meta.createdIds ?? {}).sort(),
           keywordsAfter: after.list[0].keywords };
});

// Push: jam's connectEventSource needs a global EventSource (not in Node 20) and, like a
// browser's, cannot send Authorization; read the session's eventSourceUrl as a stream with
// the Bearer header instead, closeafter=state, after a change this client makes.
await step("eventsource", async () => {
  const url = session.eventSourceUrl.replace("{types}", "Email").replace("{closeafter}", "state").replace("{ping}", "0");
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 10000);
  const response = await fetch(url, { headers: { Authorization: `Bearer ${env("JMAP_TOKEN")}`, Accept: "text/event-stream" },
                                      signal: controller.signal });
  const reader = response.body.getReader();
  await jam.api.Email.set({ accountId, update: { [emailId]: { "keywords/$flagged": null } } });
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  clearTimeout(timer);
  const data = text.split("\n").find((line) => line.startsWith("data:"));
  return { status: response.status, type: response.headers.get("content-type"),
           event: text.includes("event: state"), change: data ? JSON.parse(data.slice(5)) : null };
});

process.stdout.write(JSON.stringify(out) + "\n");
