// HTTP API client: the session (tokens) in localStorage, errors as ApiError with the server's
// own message, and a transparent token refresh on 401.

const SESSION_KEY = 'parley.session';
const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let session = loadSession();
let onAuthLost = () => {};
let refreshing = null;

function loadSession() {
  try { return JSON.parse(localStorage.getItem(SESSION_KEY)); } catch { return null; }
}

export function getSession() { return session; }

export function setSession(s) {
  session = s;
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

export function clearSession() {
  session = null;
  localStorage.removeItem(SESSION_KEY);
}

// setAuthLostHandler is called once the session cannot be renewed (refresh refused).
export function setAuthLostHandler(f) { onAuthLost = f; }

async function send(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'network', 'Can’t reach the server. Check your connection and try again.');
  }
}

async function parse(res) {
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* a non-JSON answer is reported by status below */ }
  if (!res.ok) {
    const e = data && data.error;
    throw new ApiError(res.status, (e && e.code) || 'http_' + res.status,
      (e && e.message) || `The server answered ${res.status} ${res.statusText}.`);
  }
  return data;
}

async function request(method, path, body, { auth = true } = {}) {
  if (!auth) return parse(await send(method, path, body));
  if (!session) throw new ApiError(401, 'unauthorized', 'You are not logged in.');
  const token = session.access_token;
  const res = await send(method, path, body, token);
  if (res.status !== 401) return parse(res);
  await refresh(token);
  return parse(await send(method, path, body, session.access_token));
}

// refresh renews the token pair once for every request refused with the same stale token: all
// concurrent 401s wait on one refresh, since the old refresh token stops working after one use.
function refresh(staleToken) {
  if (session && session.access_token !== staleToken) return Promise.resolve();
  refreshing ??= doRefresh().finally(() => { refreshing = null; });
  return refreshing;
}

// doRefresh runs under a lock shared by the browser's tabs (Web Locks), so that two tabs
// never present the same refresh token: the second finds the pair the first stored. The
// server also tolerates a reuse just after a rotation, but logs the device out for a later
// one (it looks like a stolen token).
function doRefresh() {
  return navigator.locks ? navigator.locks.request('parley-refresh', refreshOnce) : refreshOnce();
}

// adoptStored takes the pair another tab of the same device stored, if it is newer.
function adoptStored() {
  const stored = loadSession();
  if (stored && session && stored.device_id === session.device_id && stored.refresh_token !== session.refresh_token) {
    session = stored;
    return true;
  }
  return false;
}

async function refreshOnce() {
  if (adoptStored()) return; // another tab rotated the pair already; its tokens are ours too
  const lost = () => {
    clearSession();
    onAuthLost('Your session has ended. Please log in again.');
    return new ApiError(401, 'unauthorized', 'Your session has ended. Please log in again.');
  };
  if (!session) throw lost();
  const res = await send('POST', '/auth/refresh', { refresh_token: session.refresh_token });
  if (res.status === 401 || res.status === 400) {
    if (adoptStored()) return; // a tab without Web Locks rotated it meanwhile
    throw lost();
  }
  const tokens = await parse(res); // a network or server failure keeps the session for a retry
  setSession({ ...session, ...tokens });
}

const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') s.set(k, v);
  const str = s.toString();
  return str ? '?' + str : '';
};
const enc = encodeURIComponent;

export const api = {
  signup: (username, password, displayName) =>
    request('POST', '/auth/signup', { username, password, display_name: displayName || undefined }, { auth: false }),
  login: (username, password) =>
    request('POST', '/auth/login', { username, password, device_name: deviceName() }, { auth: false }),
  logout: () => request('POST', '/auth/logout'),
  me: () => request('GET', '/me'),
  user: (id) => request('GET', `/users/${enc(id)}`),
  searchUsers: (prefix, limit) => request('GET', '/users' + q({ prefix, limit })),
  conversation: (id) => request('GET', `/conversations/${enc(id)}`),
  createDirect: (userId) => request('POST', '/conversations', { type: 'direct', member_ids: [userId] }),
  createGroup: (name, ids) => request('POST', '/conversations', { type: 'group', name, member_ids: ids }),
  renameGroup: (id, name) => request('PATCH', `/conversations/${enc(id)}`, { name }),
  addMembers: (id, ids) => request('POST', `/conversations/${enc(id)}/members`, { user_ids: ids }),
  removeMember: (id, userId) => request('DELETE', `/conversations/${enc(id)}/members/${enc(userId)}`),
  messages: (id, { before, after, limit } = {}) =>
    request('GET', `/conversations/${enc(id)}/messages` + q({ before, after, limit })),
  // sync reads every page (has_more: call again at once with next_since) and merges them: a
  // conversation that changed again while the pages were read is kept once, as last seen.
  sync: async (since) => {
    const convs = new Map();
    const removed = [];
    for (;;) {
      const res = await request('GET', '/sync' + q({ since }));
      for (const c of res.conversations) convs.set(c.id, c);
      removed.push(...(res.removed_conversation_ids || []));
      since = res.next_since;
      if (!res.has_more) return { conversations: [...convs.values()], removed_conversation_ids: removed, next_since: since };
    }
  },
  presence: (ids) => request('GET', '/presence' + q({ user_ids: ids.join(',') })),
  ticket: () => request('POST', '/ws/ticket'),
};

function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? 'Edge' : /Firefox\//.test(ua) ? 'Firefox' : /Chrom(e|ium)\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS' : /Windows/.test(ua) ? 'Windows' : /Linux/.test(ua) ? 'Linux' : '';
  return `Web: ${browser}${os ? ' on ' + os : ''}`;
}
