// The service worker: the installed app opens without a network, showing the last listings
// read, read-only. Served at /sw.js (so its scope is the whole origin) with the server's
// version and asset list written in where the placeholders are: a new release is a new
// worker, which caches the new shell and drops the old one.
//
// What it does with a request:
//   * the page (a navigation to "/"): the network first, the cached copy when there is none;
//   * /app/<version>/... (immutable): the cache first;
//   * GET /api/auth/session and GET /api/files (the listings): the network first, and the
//     answer is kept (at most MAX_LISTINGS of them, the oldest go); offline, the kept one, or a
//     503 `offline` in the API's error shape;
//   * any other GET of /api/: offline, that 503;
//   * downloads, other pages, anything else, and every write: not touched (never cached,
//     never queued).
// Signing out deletes the kept answers (main.js).

const APP = '%APP%';
const ASSETS = JSON.parse('%ASSETS%');
const SHELL_CACHE = `drive-shell-${APP.split('/').pop()}`;
const DATA_CACHE = 'drive-data';
const MAX_LISTINGS = 100;
const KEPT = new Set(['/api/auth/session', '/api/files']);

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(SHELL_CACHE);
    await cache.addAll(['/', ...ASSETS.map((path) => `${APP}/${path}`)]);
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('drive-shell-') && name !== SHELL_CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function offline() {
  const body = JSON.stringify({error: {code: 'offline',
    message: 'You are offline: this is the last listing read, and changes wait for the network.'}});
  return new Response(body, {status: 503, headers: {'Content-Type': 'application/json'}});
}

async function page(request) {
  try {
    return await fetch(request);
  } catch {
    return (await caches.match('/', {cacheName: SHELL_CACHE})) || Response.error();
  }
}

async function asset(request) {
  const cached = await caches.match(request, {cacheName: SHELL_CACHE});
  return cached || fetch(request);
}

/** Keep `response` for `request`, dropping the oldest kept answers past MAX_LISTINGS. */
async function keep(request, response) {
  const cache = await caches.open(DATA_CACHE);
  await cache.delete(request);
  await cache.put(request, response);
  const keys = await cache.keys(); // in insertion order
  for (const old of keys.slice(0, Math.max(0, keys.length - MAX_LISTINGS))) {
    await cache.delete(old);
  }
}

/** Tell the page whether its last API request reached the server: that, not navigator.onLine
 * (true on a LAN whose server is down), is what the offline banner means. */
function tell(event, isOffline) {
  event.waitUntil(self.clients.get(event.clientId).then((client) => {
    if (client) client.postMessage({type: 'network', offline: isOffline});
  }));
}

async function data(request, event) {
  try {
    const response = await fetch(request);
    tell(event, false);
    if (response.ok) event.waitUntil(keep(request, response.clone()));
    return response;
  } catch {
    tell(event, true);
    return (await caches.match(request, {cacheName: DATA_CACHE})) || offline();
  }
}

async function otherApi(request, event) {
  try {
    const response = await fetch(request);
    tell(event, false);
    return response;
  } catch {
    tell(event, true);
    return offline();
  }
}

self.addEventListener('fetch', (event) => {
  const {request} = event;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  // A download (a file's content, a zip) goes straight to the network, as before.
  if (url.pathname.endsWith('/content') || url.pathname.endsWith('/download')) return;
  if (request.mode === 'navigate') {
    if (url.pathname === '/') event.respondWith(page(request));
    return;
  }
  if (url.pathname.startsWith(`${APP}/`)) event.respondWith(asset(request));
  else if (KEPT.has(url.pathname)) event.respondWith(data(request, event));
  else if (url.pathname.startsWith('/api/')) event.respondWith(otherApi(request, event));
});
