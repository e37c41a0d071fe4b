// The public JSON API (docs/api.md), one function per route the page uses. The browser's
// session is the HttpOnly drive_session cookie, which this code never sees; state-changing
// requests add X-CSRF-Token, which only a page of this origin can learn (GET /api/auth/session).

/** A failed request: the API's {error: {code, message, ...}} with the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, message, details = {}, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token || null;
}

function retryAfter(resp) {
  const value = Number(resp.headers.get('Retry-After'));
  return Number.isFinite(value) && value > 0 ? value : null;
}

/** The error a non-2xx response stands for, with the API's own message when it sent one. */
export async function errorFrom(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON (a proxy's page, say): fall back to the status line.
  }
  const err = (body && body.error) || {};
  return new ApiError(resp.status, err.code || 'http_error',
                      err.message || `${resp.status} ${resp.statusText || 'error'}`.trim(),
                      err, retryAfter(resp));
}

export function networkError() {
  return new ApiError(0, 'network_error',
                      'The server cannot be reached. Check the connection and try again.');
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function call(method, path, {json, query, signal} = {}) {
  const headers = {};
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let resp;
  try {
    resp = await fetch(withQuery(path, query), {
      method, headers, signal, credentials: 'same-origin', cache: 'no-store',
      body: json === undefined ? undefined : JSON.stringify(json),
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw networkError();
  }
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204) return null;
  return resp.json();
}

const id = (fileId) => encodeURIComponent(fileId);

export const api = {
  session: () => call('GET', '/api/auth/session'),
  login: (email, password) => call('POST', '/api/auth/login',
                                   {json: {email, password, cookie: true}}),
  logout: () => call('POST', '/api/auth/logout'),
  changePassword: (oldPassword, newPassword) => call('POST', '/api/auth/password',
    {json: {old_password: oldPassword, new_password: newPassword}}),

  list: (path, limit, cursor, signal) => call('GET', '/api/files',
                                              {query: {path, limit, cursor}, signal}),
  createFolder: (path) => call('POST', '/api/folders', {json: {path}}),
  move: (fileId, path) => call('PATCH', `/api/files/${id(fileId)}`, {json: {path}}),
  trash: (fileId) => call('DELETE', `/api/files/${id(fileId)}`),

  listTrash: () => call('GET', '/api/trash'),
  search: (q, cursor) => call('GET', '/api/search', {query: {q, limit: 100, cursor}}),
  restore: (fileId) => call('POST', `/api/trash/${id(fileId)}/restore`),
  purge: (fileId) => call('DELETE', `/api/trash/${id(fileId)}`),

  uploadInit: (body) => call('POST', '/api/files/upload-init', {json: body}),
  complete: (fileId, body) => call('POST', `/api/files/${id(fileId)}/complete`, {json: body}),

  cursor: () => call('GET', '/api/sync/cursor'),
  changes: (cursor, timeout, signal) => call('GET', '/api/sync/changes',
    {query: {cursor, timeout, include_own: 'true'}, signal}),

  versions: (fileId) => call('GET', `/api/files/${id(fileId)}/versions`),
  restoreVersion: (fileId, version) => call('POST',
    `/api/files/${id(fileId)}/restore/${encodeURIComponent(version)}`),

  shares: (fileId) => call('GET', `/api/files/${id(fileId)}/shares`),
  share: (fileId, userEmail, permission) => call('POST', `/api/files/${id(fileId)}/share`,
    {json: {user_email: userEmail, permission}}),
  changeShare: (shareId, permission) => call('PATCH', `/api/shares/${id(shareId)}`,
                                             {json: {permission}}),
  endShare: (shareId) => call('DELETE', `/api/shares/${id(shareId)}`),
  links: (fileId) => call('GET', `/api/files/${id(fileId)}/links`),
  createLink: (fileId, options) => call('POST', `/api/files/${id(fileId)}/links`,
                                        {json: options}),
  revokeLink: (linkId) => call('DELETE', `/api/links/${id(linkId)}`),

  quota: () => call('GET', '/api/quota'),
  devices: () => call('GET', '/api/devices'),
  removeDevice: (deviceId) => call('DELETE', `/api/devices/${id(deviceId)}`),
  notifications: (limit) => call('GET', '/api/notifications', {query: {limit}}),
  markRead: (body) => call('POST', '/api/notifications/read', {json: body}),
  appPasswords: () => call('GET', '/api/app-passwords'),
  createAppPassword: (name) => call('POST', '/api/app-passwords', {json: {name}}),
  revokeAppPassword: (appPasswordId) => call('DELETE', `/api/app-passwords/${id(appPasswordId)}`),
};

/** Where a file's bytes are: the browser downloads it by the cookie, with its own progress. */
export function contentUrl(fileId, version = null) {
  const path = `/api/files/${id(fileId)}/content`;
  return version === null ? path : `${path}?version=${encodeURIComponent(version)}`;
}

/** A thumbnail of an image (WebP, `px` on its longer side). The version is in the address, so
 * the browser's cache (a day) never shows an old picture for a file that changed. */
export function thumbnailUrl(fileId, version, px) {
  return `/api/files/${id(fileId)}/thumbnail?${new URLSearchParams({size: px, version})}`;
}

/** A zip of these items, streamed by the server (GET, so the browser downloads it itself; the
 * cookie authenticates it). At most ZIP_MAX ids keep the address under the server's 16 KiB. */
export const ZIP_MAX = 300;
export function zipUrl(fileIds) {
  const query = new URLSearchParams();
  for (const fileId of fileIds) query.append('file_id', fileId);
  return `/api/files/zip?${query}`;
}
