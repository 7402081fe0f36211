// REST calls and the tokens: kept in localStorage (a page refresh finds them), refreshed before they expire.
//
// Refresh tokens rotate and a spent one revokes the whole sign-in, so two tabs must never refresh with the same
// token: every refresh runs under one Web Lock shared by the tabs, and re-reads the stored tokens inside it (the tab
// that waited finds the new pair the other tab stored, and uses it). That re-read is from IndexedDB, not
// localStorage: localStorage reaches other tabs (other renderer processes) a little later, so a tab taking the lock
// just after another released it could still see the spent token there; an IndexedDB transaction that completed is
// seen by every tab. localStorage keeps a copy for synchronous reads (the user, an access token still valid).

const KEY = 'chinwag.tokens';
const BASE = '/api/v1';
const EARLY_MS = 60_000; // refresh this long before the access token expires
const LOCK = 'chinwag-token-refresh';

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail || `HTTP ${status}`;
  }
}

const signedOutListeners = new Set();
export const onSignedOut = (fn) => signedOutListeners.add(fn);

function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY));
  } catch {
    return null;
  }
}

let database = null;
function db() {
  database ??= new Promise((resolve, reject) => {
    const open = indexedDB.open('chinwag', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('kv');
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  return database;
}

/** Tokens as every tab sees them now (IndexedDB), or localStorage's copy where IndexedDB is unavailable. */
async function loadShared() {
  try {
    const store = (await db()).transaction('kv').objectStore('kv');
    const value = await new Promise((resolve, reject) => {
      const get = store.get(KEY);
      get.onsuccess = () => resolve(get.result);
      get.onerror = () => reject(get.error);
    });
    return value ?? null;
  } catch {
    return load();
  }
}

async function saveShared(value) {
  try {
    const tx = (await db()).transaction('kv', 'readwrite');
    if (value) tx.objectStore('kv').put(value, KEY);
    else tx.objectStore('kv').delete(KEY);
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
  } catch {
    /* no IndexedDB: localStorage alone */
  }
}

async function store(tokens) {
  const value = {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    expires_at: Date.now() + tokens.expires_in * 1000,
    user: tokens.user,
  };
  await saveShared(value);
  localStorage.setItem(KEY, JSON.stringify(value));
}

async function forget() {
  await saveShared(null);
  localStorage.removeItem(KEY);
  for (const fn of signedOutListeners) fn();
}

// Another tab signed out (or in as someone else): follow it.
window.addEventListener('storage', (event) => {
  if (event.key !== KEY) return;
  const now = load();
  if (!now) for (const fn of signedOutListeners) fn();
  else if (event.oldValue && JSON.parse(event.oldValue).user?.id !== now.user?.id) location.reload();
});

export const currentUser = () => load()?.user ?? null;

function withLock(fn) {
  if (navigator.locks) return navigator.locks.request(LOCK, fn);
  return fn(); // not a secure context: no locks; the storage re-read below still avoids most races
}

/** A fresh pair, unless another tab already rotated `seen` (then its pair). `force` refreshes a valid token too. */
async function refresh(seen, { force = false } = {}) {
  return withLock(async () => {
    const tokens = await loadShared();
    if (!tokens) throw new ApiError(401, 'signed_out', 'You are signed out.');
    if (tokens.refresh_token !== seen) return tokens.access_token;
    if (!force && tokens.expires_at - EARLY_MS > Date.now()) return tokens.access_token;
    const answer = await fetch(`${BASE}/auth/refresh`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: tokens.refresh_token }),
    });
    if (!answer.ok) {
      const error = await errorOf(answer);
      if (answer.status === 401 || answer.status === 400 || answer.status === 422) await forget();
      throw error;
    }
    const fresh = await answer.json();
    await store(fresh); // before the lock is released
    return fresh.access_token;
  });
}

/** The access token to use now, refreshed first when it is about to expire. */
export async function accessToken({ force = false } = {}) {
  const tokens = load();
  if (!tokens) throw new ApiError(401, 'signed_out', 'You are signed out.');
  if (!force && tokens.expires_at - EARLY_MS > Date.now()) return tokens.access_token;
  return refresh(tokens.refresh_token, { force });
}

async function errorOf(answer) {
  let body = null;
  try {
    body = await answer.json();
  } catch {
    /* not JSON */
  }
  let detail = body?.detail;
  if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join('; '); // FastAPI's 422 shape
  if (answer.status === 413 && !detail) detail = 'The file is too large.';
  return new ApiError(answer.status, body?.code || 'http_error', detail || answer.statusText);
}

function url(path, query) {
  const u = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null) u.searchParams.set(k, v);
  return u.pathname + u.search;
}

/** One JSON request with the bearer token; a 401 refreshes once and retries. */
export async function request(method, path, { body, query, auth = true } = {}) {
  const send = async (token) => {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(url(path, query), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  let answer = await send(auth ? await accessToken() : null);
  if (answer.status === 401 && auth) answer = await send(await accessToken({ force: true }));
  if (!answer.ok) throw await errorOf(answer);
  return answer.status === 204 ? null : answer.json();
}

export async function signIn(email, password) {
  const tokens = await request('POST', '/auth/login', { body: { email, password }, auth: false });
  await store(tokens);
  return tokens.user;
}

export async function register(email, password) {
  await request('POST', '/auth/register', { body: { email, password }, auth: false });
  return signIn(email, password);
}

export async function signOut() {
  const tokens = load();
  if (tokens) {
    try {
      await request('POST', '/auth/logout', { body: { refresh_token: tokens.refresh_token }, auth: false });
    } catch {
      /* the tokens go from this browser either way */
    }
  }
  await forget();
}

export const getConfig = () => request('GET', '/config', { auth: false });
export const listSessions = (cursor) => request('GET', '/sessions', { query: { limit: 30, cursor } });
export const getSession = (id) => request('GET', `/sessions/${encodeURIComponent(id)}`);
export const createSession = (body = {}) => request('POST', '/sessions', { body });
export const updateSession = (id, body) => request('PATCH', `/sessions/${encodeURIComponent(id)}`, { body });
export const deleteSession = (id) => request('DELETE', `/sessions/${encodeURIComponent(id)}`);
export const messages = (id, query) => request('GET', `/sessions/${encodeURIComponent(id)}/messages`, { query });
export const switchBranch = (id, seq) => request('POST', `/sessions/${encodeURIComponent(id)}/branch`, { body: { seq } });
export const search = (q) => request('GET', '/search', { query: { q, limit: 20 } });
export const listFiles = (id) => request('GET', `/sessions/${encodeURIComponent(id)}/files`);
export const deleteFile = (id, fileId) =>
  request('DELETE', `/sessions/${encodeURIComponent(id)}/files/${encodeURIComponent(fileId)}`);

/** Upload one file with progress (`onProgress(fraction)`); resolves the `File`, rejects an `ApiError`. */
export async function upload(sessionId, file, onProgress) {
  const attempt = (token) =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `${BASE}/sessions/${encodeURIComponent(sessionId)}/files`);
      xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
      xhr.onload = () => resolve(xhr);
      xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload failed: the server could not be reached.'));
      const form = new FormData();
      form.append('file', file, file.name);
      xhr.send(form);
    });
  let xhr = await attempt(await accessToken());
  if (xhr.status === 401) xhr = await attempt(await accessToken({ force: true }));
  let body = null;
  try {
    body = JSON.parse(xhr.responseText);
  } catch {
    /* a 413 may come from a proxy, not as JSON */
  }
  if (xhr.status === 201) return body;
  let detail = body?.detail;
  if (!detail && xhr.status === 413) detail = 'The file is too large.';
  if (!detail && xhr.status === 415) detail = 'This type of file is not accepted.';
  throw new ApiError(xhr.status, body?.code || 'http_error', detail || `Upload failed (HTTP ${xhr.status}).`);
}

/** A file's bytes as an object URL (downloads need the bearer token, so no plain link). */
export async function fileObjectUrl(sessionId, fileId) {
  const answer = await fetch(url(`/sessions/${encodeURIComponent(sessionId)}/files/${encodeURIComponent(fileId)}/content`), {
    headers: { Authorization: `Bearer ${await accessToken()}` },
  });
  if (!answer.ok) throw await errorOf(answer);
  return URL.createObjectURL(await answer.blob());
}

/** A session's export as a Blob and the file name the server gave it (`format`: 'json' or 'markdown'). */
export async function exportSession(sessionId, format) {
  const answer = await fetch(url(`/sessions/${encodeURIComponent(sessionId)}/export`, { format }), {
    headers: { Authorization: `Bearer ${await accessToken()}` },
  });
  if (!answer.ok) throw await errorOf(answer);
  return { blob: await answer.blob(), filename: filenameOf(answer.headers.get('Content-Disposition')) };
}

function filenameOf(disposition) {
  const encoded = /filename\*=UTF-8''([^;]+)/i.exec(disposition || '');
  if (encoded) {
    try {
      return decodeURIComponent(encoded[1]);
    } catch {
      /* fall through */
    }
  }
  return /filename="([^"]+)"/i.exec(disposition || '')?.[1] ?? null;
}
