// The account's corner of the page: the storage used (a bar in the account menu), the
// notifications bell, and the devices page (#/devices) where a lost phone or an old browser
// session is removed. The bell's count is read at start, when the bell opens, and whenever the
// page's long poll brings a change (a share arrives as one), so it needs no poll of its own.

import {AppPasswordsPanel} from './app_passwords.js';
import {api} from './api.js';
import {confirmAction} from './dialogs.js';
import {h, icon, replace} from './dom.js';
import {formatAnyDate, formatSize} from './format.js';

const SHOWN_NOTIFICATIONS = 20;
const ACTIONS = {added: 'added', edited: 'edited', moved: 'moved', deleted: 'deleted',
                 restored: 'restored', shared: 'shared', left: 'left'};

/** "bob@example.com shared /Shared with me/Plans": one notification as a sentence. */
function describe(n) {
  const who = n.actor && n.actor.email ? n.actor.email : 'Someone';
  const what = ACTIONS[n.action] || n.action;
  const count = n.count > 1 ? ` (${n.count} times)` : '';
  return `${who} ${what} ${n.path}${count}`;
}

/** The storage bar: "1.2 MB of 10 GB used". */
export class QuotaBar {
  constructor() {
    this.meter = h('progress', {max: 1, value: 0, 'aria-labelledby': 'quota-text'});
    this.text = h('span', {id: 'quota-text'}, 'Storage…');
    this.el = h('div', {class: 'quota'}, this.text, this.meter);
  }

  async refresh() {
    try {
      const {used, total} = await api.quota();
      this.meter.max = Math.max(total, 1);
      this.meter.value = Math.min(used, this.meter.max);
      this.text.textContent = `${formatSize(used)} of ${formatSize(total)} used`;
    } catch (err) {
      if (err.status === 401) throw err;
      this.text.textContent = 'Storage: unknown';
    }
  }
}

/** The bell: unread count in its label; opening it lists the newest and offers to mark read. */
export class Bell {
  constructor({onError}) {
    this.onError = onError;
    this.count = h('span', {class: 'bell-count', 'aria-hidden': 'true', hidden: true});
    this.summary = h('summary', {class: 'bell-button', 'aria-label': 'Notifications'},
      icon('bell'), this.count);
    this.list = h('ul', {class: 'bell-list', 'aria-label': 'Notifications'});
    this.markButton = h('button', {type: 'button', class: 'button small',
                                   onclick: () => this.markAll()}, 'Mark all read');
    this.el = h('details', {class: 'bell'}, this.summary,
      h('div', {class: 'bell-menu'}, h('div', {class: 'bell-head'},
        h('strong', {}, 'Notifications'), this.markButton), this.list));
    this.el.addEventListener('toggle', () => {
      if (this.el.open) this.refresh({list: true});
    });
  }

  show(unread) {
    this.count.textContent = unread > 99 ? '99+' : String(unread);
    this.count.hidden = unread === 0;
    this.summary.setAttribute('aria-label', unread
      ? `Notifications, ${unread} unread` : 'Notifications, none unread');
    this.markButton.disabled = unread === 0;
  }

  /** Read the count (and the list too when it is open or asked for). */
  async refresh({list = this.el.open} = {}) {
    try {
      const page = await api.notifications(list ? SHOWN_NOTIFICATIONS : 1);
      this.show(page.unread_count);
      if (list) {
        replace(this.list, page.notifications.length ? page.notifications.map((n) => {
          const date = formatAnyDate(n.created_at);
          return h('li', {class: n.read ? 'read' : 'unread'}, h('span', {}, describe(n)),
            h('time', {datetime: date.iso, title: date.full}, date.text));
        }) : h('li', {class: 'empty'}, 'No notifications.'));
      }
    } catch (err) {
      this.onError(err);
    }
  }

  async markAll() {
    try {
      const {unread_count: unread} = await api.markRead({all: true});
      this.show(unread);
      await this.refresh({list: true});
    } catch (err) {
      this.onError(err);
    }
  }
}

/** #/devices: every device signed in to the account, this browser marked. */
export class DevicesView {
  constructor(shell) {
    this.shell = shell;
    this.body = h('tbody', {});
    this.status = h('p', {class: 'listing-status', role: 'status'});
    this.el = h('section', {class: 'devices', 'aria-labelledby': 'devices-title'},
      h('h1', {id: 'devices-title', class: 'folder-title'}, 'Devices'),
      h('p', {class: 'hint'}, 'Removing a device signs it out at once: its sync stops and its'
        + ' token no longer works.'),
      h('div', {class: 'table-wrap'}, h('table', {class: 'listing', 'aria-labelledby': 'devices-title'},
        h('thead', {}, h('tr', {}, ['Name', 'Type', 'Last seen', ''].map((t) => h('th',
          {scope: 'col'}, t)))), this.body)),
      this.status);
    this.appPasswords = new AppPasswordsPanel(shell, {onChanged: () => this.refresh()});
    this.el.append(this.appPasswords.el);
  }

  open() {
    document.title = 'Devices – Drive';
    return Promise.all([this.refresh(), this.appPasswords.refresh()]);
  }

  async refresh() {
    try {
      const {devices} = await api.devices();
      replace(this.body, devices.map((d) => this.row(d)));
      this.status.textContent = `${devices.length} ${devices.length === 1 ? 'device' : 'devices'}`;
    } catch (err) {
      this.shell.showError(err);
    }
  }

  row(d) {
    const seen = formatAnyDate(d.last_seen_at || d.created_at);
    return h('tr', {},
      h('th', {scope: 'row'}, d.name, d.current ? h('span', {class: 'badge'}, 'this browser') : null),
      h('td', {}, d.type),
      h('td', {}, seen.iso ? h('time', {datetime: seen.iso, title: seen.full}, seen.text) : ''),
      h('td', {class: 'actions'}, h('button', {type: 'button', class: 'button small danger',
        'aria-label': `Remove ${d.name}`, onclick: () => this.remove(d)}, 'Remove')));
  }

  remove(d) {
    return confirmAction({
      title: d.current ? 'Remove this browser?' : `Remove “${d.name}”?`, confirm: 'Remove',
      message: d.current
        ? 'This is the browser you are using now: removing it signs you out here.'
        : `“${d.name}” is signed out at once; it has to sign in again to sync.`,
      onConfirm: async () => {
        await api.removeDevice(d.device_id);
        if (d.current) {
          this.shell.end('This browser was removed from your devices. Sign in again.');
          return;
        }
        this.shell.notify(`Removed “${d.name}”.`);
        await this.refresh();
      }});
  }

  touches() {
    return false; // the change feed says nothing about devices
  }
}
