// Start: ask who is signed in (the cookie, if any, says), then show the drive or the form.
// Also the installable app's part: the service worker (sw.js) and the offline banner.

import {api, setCsrfToken} from './api.js';
import {h, replace} from './dom.js';
import {loginView} from './login.js';
import {Shell} from './shell.js';

const root = document.getElementById('app');
let shell = null;
// The service worker keeps the last listings read (sw.js); they are this user's only.
const DATA_CACHE = 'drive-data';

const PROBE_MS = 3000; // offline, how often to ask whether the server is back

/** Offline (the browser says so, or the worker had to answer without the server), the page
 * shows what the worker kept, read-only: the banner says so and the toolbar's actions go (CSS
 * on body.offline). Back online, the open view is read again. */
const offlineBanner = h('p', {class: 'offline-banner', role: 'status', hidden: true},
  'Offline: this is the last listing read; changes are off until the connection is back.');
document.body.prepend(offlineBanner);
let workerOffline = false;
let probe = null;

function showOnline() {
  const offline = !navigator.onLine || workerOffline;
  const was = document.body.classList.contains('offline');
  offlineBanner.hidden = !offline;
  document.body.classList.toggle('offline', offline);
  clearInterval(probe);
  // Through the worker, which answers and tells (see sw.js), so a probe is never a failed
  // load; without one, the browser's own online event is all there is.
  if (offline && navigator.serviceWorker && navigator.serviceWorker.controller) {
    probe = setInterval(() => fetch('/api/auth/session').catch(() => {}), PROBE_MS);
  }
  if (was && !offline && shell) shell.scheduleRefresh();
}

window.addEventListener('offline', showOnline);
window.addEventListener('online', showOnline);
showOnline();

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.addEventListener('message', (event) => {
    if (event.data && event.data.type === 'network') {
      workerOffline = event.data.offline;
      showOnline();
    }
  });
  navigator.serviceWorker.startMessages();
  navigator.serviceWorker.register('/sw.js', {scope: '/'}).catch((err) => {
    console.warn('no offline app:', err); // the app works without it
  });
}

function showLogin(notice = '') {
  if (shell) shell.stop();
  shell = null;
  setCsrfToken(null);
  if (globalThis.caches) caches.delete(DATA_CACHE).catch(() => {});
  document.title = 'Sign in – Drive';
  replace(root, loginView({notice, onSignedIn: async (login) => {
    setCsrfToken(login.csrf_token);
    await showDrive(await api.session());
  }}));
}

function showDrive(session) {
  setCsrfToken(session.csrf_token);
  shell = new Shell(root, session, {onSignedOut: showLogin});
  shell.start();
}

/** Nothing may end in a blank page: an error nobody caught is shown where it can be read. */
function showUnexpected(err) {
  const message = (err && err.message) || String(err);
  if (shell) shell.showError(err instanceof Error ? err : new Error(message));
  else replace(root, h('main', {class: 'login'}, h('p', {class: 'form-error', role: 'alert'}, message),
                       h('a', {href: '/', class: 'button'}, 'Reload')));
}

// Shown, and still reported to the console (so the browser tests see them too).
window.addEventListener('unhandledrejection', (event) => showUnexpected(event.reason));
window.addEventListener('error', (event) => showUnexpected(event.error || event.message));

async function boot() {
  try {
    showDrive(await api.session());
  } catch (err) {
    if (err.status === 401) showLogin();
    else showUnexpected(err);
  }
}

boot();
