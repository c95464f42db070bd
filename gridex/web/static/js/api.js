// The public API, as any third party uses it: bearer tokens, the error shape, refresh on expiry.
// Tokens live in this tab's sessionStorage (same origin only, gone when the tab closes) and in
// memory; nothing is written to cookies, so no other site can make the browser send them.

export const API = "/api/v1";
const STORE = "gridex.session";

let session = load();
let refreshing = null;
const listeners = new Set();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || null;
  } catch {
    return null;
  }
}

function save(next) {
  session = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  for (const fn of listeners) fn(session);
}

export function currentSession() {
  return session;
}

export function onSession(fn) {
  listeners.add(fn);
}

/** Keep a token pair (login, wallet sign-in, refresh) and the user it belongs to. */
export function keepTokens(pair, user) {
  save({
    access: pair.access_token,
    refresh: pair.refresh_token,
    expires: Date.now() + pair.expires_in * 1000,
    user: user ?? pair.user ?? session?.user ?? null,
  });
}

export function setUser(user) {
  if (session) save({ ...session, user });
}

export function forget() {
  save(null);
}

/** An API error in the API's shape, with the HTTP status. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "HTTP_" + status;
    this.details = error.details || {};
    this.requestId = body?.request_id;
  }
}

/** A section's endpoint is absent from this deployment (the module is not installed). */
export function isMissingRoute(err) {
  return err instanceof ApiError && err.status === 404;
}

async function refreshTokens() {
  // One refresh at a time: the refresh token rotates, and presenting a spent one revokes them all.
  if (!refreshing) {
    const spent = session?.refresh;
    refreshing = (async () => {
      if (!spent) throw new ApiError(401, { error: { code: "AUTHENTICATION_REQUIRED" } });
      const res = await fetch(`${API}/auth/refresh`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: spent }),
      });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        forget();
        throw new ApiError(res.status, body);
      }
      keepTokens(body);
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** Refresh the token pair now (the WebSocket was refused with the current one). */
export function renewTokens() {
  return refreshTokens();
}

/** A fresh access token, refreshed shortly before it expires. */
export async function accessToken() {
  if (!session) return null;
  if (session.expires - Date.now() < 30_000) await refreshTokens();
  return session?.access ?? null;
}

/**
 * Call the API. `body` is sent as JSON; `idempotent` adds an Idempotency-Key so a retried
 * money-moving POST is answered once. Resolves to the parsed body (or a Blob with `blob`).
 */
export async function api(path, { method = "GET", body, query, idempotent, blob, auth = true } = {}) {
  let url = path.startsWith("/") ? path : `${API}/${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const headers = { accept: blob ? "*/*" : "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (idempotent) headers["idempotency-key"] = crypto.randomUUID();
  const send = async () => {
    const token = auth ? await accessToken() : null;
    if (token) headers.authorization = `Bearer ${token}`;
    return fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  let res = await send();
  if (res.status === 401 && auth && session) {
    // The access token was revoked or expired early: one refresh, one retry.
    await refreshTokens();
    res = await send();
  }
  if (res.ok && blob) return res.blob();
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401 && auth) forget();
    throw err;
  }
  return data;
}

/** Every item of a paginated list (bounded: a page of 100 is enough for any screen here). */
export async function list(path, query = {}) {
  const page = await api(path, { query: { per_page: 100, ...query } });
  return Array.isArray(page) ? page : page.items;
}

export async function signIn(identifier, password) {
  const who = identifier.includes("@") ? { email: identifier } : { username: identifier };
  const pair = await api("auth/login", { method: "POST", body: { ...who, password }, auth: false });
  keepTokens(pair, pair.user);
  return pair.user;
}

export async function signOut() {
  try {
    if (session) await api("auth/logout", { method: "POST" });
  } catch {
    // The session may already be gone server-side; forgetting it here is what matters.
  }
  forget();
}
