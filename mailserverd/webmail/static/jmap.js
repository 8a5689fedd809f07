// A small JMAP client (RFC 8620, RFC 8621) for the webmail, same origin only.
//
// Authentication follows docs/browser-contract: POST /auth/login sets an
// HttpOnly SameSite=Strict cookie and answers a csrfToken, which this client
// keeps in memory only (never the password) and sends as X-CSRF-Token on every
// request that is not GET/HEAD. restore() resumes a session after a reload
// through GET /auth/session.
//
// API (WEBMAIL-COMPOSE depends on it):
//   new JMAPClient()
//   await login(username, password)   -> session; throws AuthError on 401/403
//   await restore()                   -> true when a live session was resumed
//   await logout()
//   session, accountId, username
//   await call(methodCalls)           -> methodResponses; throws RequestError
//   await upload(blob, type)          -> {blobId, type, size}
//   downloadUrl(blobId, name, type)   -> a same-origin URL
//   onStateChange(callback)           -> unsubscribe function; callback(changedStates)
//                                        with {Email: "...", Mailbox: "...", ...} of this account,
//                                        or {connected: true} when the stream (re)opens (refetch),
//                                        or {disconnected: true} when it fails
//   onUnauthorized(callback)          -> unsubscribe function; callback() once the server says the
//                                        session is gone (a 401, or the push stream ended with it)
//
// The push stream (EventSource, RFC 8620 7.3) ends when the server revokes the
// session (sign-out elsewhere, password change, expiry: mailserverd/jmap/pushguard.py)
// and when the server restarts. On every stream error this client asks
// GET /auth/session: a 401 means the session is over (onUnauthorized, no silent
// reconnect loop); otherwise the browser's own retry goes on, and once it has
// failed (readyState CLOSED) or keeps failing the client reopens the stream itself
// with a bounded exponential backoff. Every (re)open tells the listeners
// {connected: true} so they refetch whatever changed while there was no stream.
//
// Signed-out page loads: a fetch answered 401 is logged by Chromium as a console
// error that no script can suppress, so restore() asks GET /auth/session only when
// this browser signed in before (a flag in localStorage holding no secret: the
// session itself is the HttpOnly cookie). Without the flag the sign-in screen shows
// at once; a dead session behind a set flag costs one logged 401 and clears the flag.

export const USING = [
  "urn:ietf:params:jmap:core",
  "urn:ietf:params:jmap:mail",
  "urn:ietf:params:jmap:submission",
];

const HINT = "webmail.signedIn";  // localStorage: this browser signed in before (no secret)
const BACKOFF_MIN = 1000;  // ms before the first reopen of a failed push stream, doubling
const BACKOFF_MAX = 30000;  // ms, the longest wait between two reopens
const ERRORS_BEFORE_REOPEN = 3;  // failed browser retries in a row before this client takes over

function hint(value) {
  try {
    if (value === undefined) return localStorage.getItem(HINT) === "1";
    if (value) localStorage.setItem(HINT, "1");
    else localStorage.removeItem(HINT);
  } catch (e) {
    return true;  // no storage (a privacy mode): always ask the server
  }
  return value;
}

export class AuthError extends Error {
  constructor(message, status) {
    super(message);
    this.name = "AuthError";
    this.status = status;
  }
}

export class RequestError extends Error {
  constructor(message, status, problem) {
    super(message);
    this.name = "RequestError";
    this.status = status;
    this.problem = problem || null;
  }
}

// The path, query and fragment of a URL the server gave us, so every request
// stays on the page's own origin whatever host name the session named.
function sameOrigin(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search + parsed.hash;
}

async function readJSON(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    return null;
  }
}

export class JMAPClient {
  constructor() {
    this.session = null;
    this.accountId = null;
    this.username = null;
    this.csrfToken = null;
    this.expiresAt = null;
    this._listeners = new Set();
    this._events = null;
    this._eventErrors = 0;    // stream errors since it last opened
    this._reopenDelay = 0;    // ms of the next backoff, 0 = none yet
    this._reopenTimer = null;
    this._checking = false;   // a GET /auth/session for a stream error is under way
    this._unauthorized = new Set();
  }

  get signedIn() {
    return this.session !== null;
  }

  // Called with no argument when the server says the session is gone (401).
  onUnauthorized(callback) {
    this._unauthorized.add(callback);
    return () => this._unauthorized.delete(callback);
  }

  async login(username, password) {
    const response = await fetch("/auth/login", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify({username, password}),
    });
    const body = await readJSON(response);
    if (!response.ok) {
      const detail = (body && body.detail) || `sign-in failed (HTTP ${response.status})`;
      throw new AuthError(response.status === 401 ? "Wrong address or password" : detail,
                          response.status);
    }
    this._adopt(body);
    await this._loadSession();
    return this.session;
  }

  async restore() {
    if (!hint()) return false;  // never signed in here: no request, no logged 401
    let response;
    try {
      response = await fetch("/auth/session", {
        credentials: "same-origin", headers: {"Accept": "application/json"},
      });
    } catch (e) {
      return false;
    }
    if (!response.ok) {
      if (response.status === 401) hint(false);
      return false;
    }
    const body = await readJSON(response);
    if (!body || !body.csrfToken) return false;
    this._adopt(body);
    try {
      await this._loadSession();
    } catch (e) {
      this._clear();
      return false;
    }
    return true;
  }

  async logout() {
    const token = this.csrfToken;
    hint(false);
    this._closeEvents();
    try {
      await fetch("/auth/logout", {
        method: "POST",
        credentials: "same-origin",
        headers: token ? {"X-CSRF-Token": token} : {},
      });
    } finally {
      this._clear();
    }
  }

  async call(methodCalls) {
    if (!this.session) throw new RequestError("not signed in", 401);
    const response = await this._fetch(sameOrigin(this.session.apiUrl), {
      method: "POST",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify({using: USING, methodCalls}),
    });
    const body = await readJSON(response);
    if (!response.ok || !body || !Array.isArray(body.methodResponses)) {
      const detail = (body && (body.detail || body.type)) || `HTTP ${response.status}`;
      throw new RequestError(`JMAP request failed: ${detail}`, response.status, body);
    }
    if (body.sessionState && this.session.state && body.sessionState !== this.session.state) {
      this._loadSession().catch(() => {});
    }
    return body.methodResponses;
  }

  // One method call; throws when the answer is an "error" response.
  async call1(name, args) {
    const [[kind, result]] = await this.call([[name, args, "0"]]);
    if (kind === "error") {
      throw new RequestError(`${name}: ${result.type}${result.description ? ": " + result.description : ""}`,
                             200, result);
    }
    return result;
  }

  async upload(blob, type) {
    if (!this.session) throw new RequestError("not signed in", 401);
    const url = sameOrigin(this.session.uploadUrl.replace("{accountId}", encodeURIComponent(this.accountId)));
    const response = await this._fetch(url, {
      method: "POST",
      headers: {"Content-Type": type || blob.type || "application/octet-stream"},
      body: blob,
    });
    const body = await readJSON(response);
    if (!response.ok || !body) {
      const detail = (body && (body.detail || body.type)) || `HTTP ${response.status}`;
      throw new RequestError(`upload failed: ${detail}`, response.status, body);
    }
    return {blobId: body.blobId, type: body.type, size: body.size};
  }

  downloadUrl(blobId, name, type) {
    const template = (this.session && this.session.downloadUrl) ||
      "/jmap/download/{accountId}/{blobId}/{name}?type={type}";
    return sameOrigin(template
      .replace("{accountId}", encodeURIComponent(this.accountId))
      .replace("{blobId}", encodeURIComponent(blobId))
      .replace("{name}", encodeURIComponent(name || "download"))
      .replace("{type}", encodeURIComponent(type || "application/octet-stream")));
  }

  onStateChange(callback) {
    this._listeners.add(callback);
    this._openEvents();
    return () => {
      this._listeners.delete(callback);
      if (!this._listeners.size) this._closeEvents();
    };
  }

  // --- internals ---

  _adopt(body) {
    hint(true);
    this.username = body.username;
    this.accountId = body.accountId;
    this.csrfToken = body.csrfToken;
    this.expiresAt = body.expiresAt || null;
  }

  _clear() {
    this._closeEvents();
    this.session = null;
    this.accountId = null;
    this.username = null;
    this.csrfToken = null;
    this.expiresAt = null;
  }

  async _fetch(url, init) {
    const headers = new Headers(init.headers || {});
    const method = (init.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD" && this.csrfToken) {
      headers.set("X-CSRF-Token", this.csrfToken);
    }
    const response = await fetch(url, {...init, headers, credentials: "same-origin"});
    if (response.status === 401 && this.session) this._ended();
    return response;
  }

  // The server says the session is over: forget it and tell the page once.
  _ended() {
    hint(false);
    this._clear();
    for (const callback of this._unauthorized) {
      try { callback(); } catch (e) { console.error(e); }
    }
  }

  async _loadSession() {
    const response = await this._fetch("/.well-known/jmap", {headers: {"Accept": "application/json"}});
    const body = await readJSON(response);
    if (!response.ok || !body) {
      throw new RequestError(`session resource: HTTP ${response.status}`, response.status, body);
    }
    this.session = body;
    this.username = body.username || this.username;
    const primary = body.primaryAccounts && body.primaryAccounts["urn:ietf:params:jmap:mail"];
    this.accountId = primary || this.accountId;
    if (this._listeners.size) this._openEvents();
  }

  _openEvents() {
    if (this._events || !this.session || !this.session.eventSourceUrl) return;
    const url = sameOrigin(this.session.eventSourceUrl
      .replace("{types}", "*").replace("{closeafter}", "no").replace("{ping}", "60"));
    const source = new EventSource(url, {withCredentials: false});
    // (re)connected: whatever changed while there was no stream is caught up by the listeners
    source.addEventListener("open", () => {
      this._eventErrors = 0;
      this._reopenDelay = 0;
      for (const callback of this._listeners) {
        try { callback({connected: true}); } catch (e) { console.error(e); }
      }
    });
    source.addEventListener("state", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      const changed = (data.changed || {})[this.accountId];
      if (!changed) return;
      for (const callback of this._listeners) {
        try { callback(changed); } catch (e) { console.error(e); }
      }
    });
    source.addEventListener("error", () => this._eventsFailed(source));
    this._events = source;
  }

  // The stream dropped (the server ended it or went away) or a (re)connect failed.
  async _eventsFailed(source) {
    if (source !== this._events) return;
    this._eventErrors += 1;
    for (const callback of this._listeners) {
      try { callback({disconnected: true}); } catch (e) { console.error(e); }
    }
    if (this._checking) return;  // one session check at a time; its outcome covers this error
    this._checking = true;
    let status = 0;
    try {
      const response = await fetch("/auth/session", {
        credentials: "same-origin", headers: {"Accept": "application/json"}, cache: "no-store",
      });
      status = response.status;
    } catch (e) {
      status = 0;  // the server is unreachable (restarting): keep trying
    } finally {
      this._checking = false;
    }
    if (source !== this._events) return;  // signed out or replaced meanwhile
    if (status === 401) {
      this._ended();
      return;
    }
    const gaveUp = source.readyState === EventSource.CLOSED;
    if (gaveUp || this._eventErrors >= ERRORS_BEFORE_REOPEN) this._reopenLater();
  }

  // Close the stream and open a new one after a bounded exponential backoff (with jitter).
  _reopenLater() {
    this._closeEvents();
    this._reopenDelay = Math.min(this._reopenDelay ? this._reopenDelay * 2 : BACKOFF_MIN, BACKOFF_MAX);
    const delay = this._reopenDelay * (0.75 + Math.random() / 2);
    this._reopenTimer = setTimeout(() => {
      this._reopenTimer = null;
      this._eventErrors = 0;
      if (this._listeners.size) this._openEvents();
    }, delay);
  }

  _closeEvents() {
    clearTimeout(this._reopenTimer);
    this._reopenTimer = null;
    if (this._events) {
      this._events.close();
      this._events = null;
    }
  }
}
