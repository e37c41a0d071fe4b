// The signed-in page: header (account menu), navigation, the open view, the upload panel,
// messages. Errors are shown with the API's own message in an alert that stays until
// dismissed; a session that ended (401) brings back the sign-in form.

import {Bell, DevicesView, QuotaBar} from './account.js';
import {api} from './api.js';
import {changePasswordDialog} from './dialogs.js';
import {h, replace} from './dom.js';
import {isWithin, joinPath} from './format.js';
import {FolderView} from './listing.js';
import {LiveUpdates} from './live.js';
import {currentRoute, folderHash} from './routes.js';
import {SearchView, searchBox} from './search.js';
import {TrashView} from './trash.js';
import {Uploads} from './upload.js';

const NOTICE_MS = 6000;
const REFRESH_DELAY_MS = 150; // changes often come in bursts: one re-read for a burst

export class Shell {
  constructor(root, session, {onSignedOut}) {
    this.root = root;
    this.session = session;
    this.signedOut = onSignedOut;
    this.folder = new FolderView(this);
    this.trash = new TrashView(this);
    this.search = new SearchView(this);
    this.searchBox = searchBox();
    this.devices = new DevicesView(this);
    this.quota = new QuotaBar();
    this.bell = new Bell({onError: (err) => this.showError(err)});
    this.uploads = new Uploads({onUploaded: (folder) => this.changedIn(folder)});
    this.live = new LiveUpdates({onChanges: (changes) => this.onChanges(changes),
                                 onSignedOut: () => this.end('Your session has ended. Sign in again.')});
    this.refreshTimer = null;
    this.bellTimer = null;
    this.onHash = () => this.route();
    this.onKey = (event) => {
      if (this.current === this.folder && !document.querySelector('dialog[open]')) {
        this.folder.onGlobalKey(event);
      }
    };
  }

  start() {
    const nav = (hash, label, match) => h('a', {href: hash, class: 'nav-link', dataset: {match}},
                                          label);
    this.errorText = h('span', {});
    this.errorBox = h('div', {class: 'error-banner', role: 'alert', hidden: true}, this.errorText,
      h('button', {type: 'button', class: 'button small', onclick: () => this.showError(null)},
        'Dismiss'));
    this.notices = h('div', {class: 'notices', role: 'status', 'aria-live': 'polite'});
    this.main = h('main', {id: 'main', class: 'view', tabindex: -1});
    this.nav = h('nav', {class: 'nav', 'aria-label': 'Places'},
      nav(folderHash('/'), 'My drive', 'drive'),
      nav(folderHash('/Shared with me'), 'Shared with me', 'shared'),
      nav('#/trash', 'Trash', 'trash'));
    const menu = h('details', {class: 'account'},
      h('summary', {'aria-label': `Account: ${this.session.email}`}, this.session.email),
      h('div', {class: 'account-menu'}, this.quota.el,
        h('a', {href: '#/devices', class: 'button'}, 'Devices'),
        h('button', {type: 'button', class: 'button', onclick: () => this.changePassword()},
          'Change password'),
        h('button', {type: 'button', class: 'button', onclick: () => this.signOut()},
          'Sign out')));
    replace(this.root,
      // Not a #fragment: the address's hash is the route.
      h('a', {href: '#main', class: 'skip-link', onclick: (event) => {
        event.preventDefault();
        this.main.focus();
      }}, 'Skip to the listing'),
      h('header', {class: 'topbar'},
        h('a', {href: folderHash('/'), class: 'brand'}, 'Drive'), this.nav, this.searchBox.el,
        this.bell.el, menu),
      this.errorBox, this.main, this.uploads.el, this.notices);
    window.addEventListener('hashchange', this.onHash);
    document.addEventListener('keydown', this.onKey);
    menu.addEventListener('toggle', () => {
      if (menu.open) this.quota.refresh().catch((err) => this.showError(err));
    });
    this.live.start();
    this.bell.refresh();
    this.route();
  }

  stop() {
    this.live.stop();
    window.removeEventListener('hashchange', this.onHash);
    document.removeEventListener('keydown', this.onKey);
    clearTimeout(this.refreshTimer);
    clearTimeout(this.bellTimer);
  }

  route() {
    const route = currentRoute();
    this.showError(null);
    const view = {trash: this.trash, devices: this.devices, search: this.search}[route.view]
      || this.folder;
    if (this.current !== view) {
      this.current = view;
      replace(this.main, view.el);
    }
    const place = route.view !== 'files' ? route.view
      : isWithin(route.path, '/Shared with me') ? 'shared' : 'drive';
    for (const link of this.nav.querySelectorAll('a')) {
      link.toggleAttribute('aria-current', link.dataset.match === place);
      if (link.dataset.match === place) link.setAttribute('aria-current', 'page');
    }
    if (route.view !== 'files') this.root.querySelector('details.account').open = false;
    if (route.view === 'search') {
      this.searchBox.input.value = route.q;
      return this.search.open(route.q);
    }
    return route.view === 'files' ? this.folder.open(route.path) : view.open();
  }

  /** Show `err` (the API's message) until dismissed; null hides it. 401 ends the session. */
  showError(err) {
    if (err && err.status === 401) {
      this.end('Your session has ended. Sign in again.');
      return;
    }
    this.errorText.textContent = err ? (err.message || String(err)) : '';
    this.errorBox.hidden = !err;
  }

  notify(text) {
    const note = h('p', {class: 'notice'}, text);
    this.notices.append(note);
    setTimeout(() => note.remove(), NOTICE_MS);
  }

  onChanges(changes) {
    // A share, or someone's change to my files, may have notified me: one read per burst.
    clearTimeout(this.bellTimer);
    this.bellTimer = setTimeout(() => this.bell.refresh(), REFRESH_DELAY_MS);
    if (changes === null) return this.scheduleRefresh();
    const touched = changes.some((c) => (this.current === this.folder
      ? this.folder.touches(c.path, c.old_path) : this.current.touches(c)));
    if (touched) this.scheduleRefresh();
    return undefined;
  }

  /** Something changed in `folder` (an upload finished): re-read it if it is open. */
  changedIn(folder) {
    if (this.current === this.folder && this.folder.touches(joinPath(folder, 'x'))) {
      this.scheduleRefresh();
    }
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.current.refresh(), REFRESH_DELAY_MS);
  }

  async changePassword() {
    this.root.querySelector('details.account').open = false;
    const done = await changePasswordDialog((o, n) => api.changePassword(o, n));
    if (done) this.end('Your password was changed. Sign in with the new one.');
  }

  async signOut() {
    try {
      await api.logout();
    } catch (err) {
      if (err.status !== 401) {
        this.showError(err);
        return;
      }
    }
    this.end('You are signed out.');
  }

  end(notice) {
    this.stop();
    this.signedOut(notice);
  }
}
