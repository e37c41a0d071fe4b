// Start: ask who is signed in (the cookie, if any, says), then show the drive or the form.

import {api, setCsrfToken} from './api.js';
import {h, replace} from './dom.js';
import {loginView} from './login.js';
import {Shell} from './shell.js';

const root = document.getElementById('app');
let shell = null;

function showLogin(notice = '') {
  if (shell) shell.stop();
  shell = null;
  setCsrfToken(null);
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
