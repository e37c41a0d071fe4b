// App passwords, on the devices page: a password per WebDAV app (Finder, a phone's file
// manager, rclone, KeePass...), made here and shown once (the server keeps only its hash), used
// with the account's email on /dav/, and revoked here. Each is also a device in the list above,
// so `onChanged` lets the devices table read itself again.

import {api} from './api.js';
import {copyText} from './clipboard.js';
import {confirmAction} from './dialogs.js';
import {h, replace} from './dom.js';
import {formatAnyDate} from './format.js';

export class AppPasswordsPanel {
  constructor(shell, {onChanged}) {
    this.shell = shell;
    this.onChanged = onChanged;
    this.body = h('tbody', {});
    this.created = h('div', {class: 'created-secret', hidden: true});
    this.name = h('input', {id: 'app-password-name', type: 'text', required: true,
                            maxlength: 100, autocomplete: 'off', placeholder: 'e.g. Phone files app'});
    this.error = h('p', {class: 'form-error', role: 'alert', hidden: true});
    const form = h('form', {class: 'app-password-form', onsubmit: (e) => {
      e.preventDefault();
      this.create();
    }},
      h('label', {for: 'app-password-name'}, 'New app password for'), this.name,
      h('button', {type: 'submit', class: 'button primary'}, 'Create app password'));
    this.el = h('section', {class: 'app-passwords', 'aria-labelledby': 'app-passwords-title'},
      h('h2', {id: 'app-passwords-title'}, 'App passwords (WebDAV)'),
      h('p', {class: 'hint'}, 'Apps that speak WebDAV connect to ',
        h('code', {}, `${location.origin}/dav/`),
        ' with your email and an app password of their own; your account password does not'
        + ' work there. Revoke one and only that app is signed out.'),
      form, this.error, this.created,
      h('div', {class: 'table-wrap'}, h('table', {class: 'listing',
                                                  'aria-labelledby': 'app-passwords-title'},
        h('thead', {}, h('tr', {}, ['Name', 'Created', 'Last used', ''].map((t) => h('th',
          {scope: 'col'}, t)))), this.body)));
  }

  async refresh() {
    try {
      const {app_passwords: rows} = await api.appPasswords();
      replace(this.body, rows.length ? rows.map((row) => this.row(row))
        : h('tr', {class: 'empty'}, h('td', {colspan: 4}, 'No app passwords yet.')));
    } catch (err) {
      this.shell.showError(err);
    }
  }

  row(row) {
    const when = (ts) => {
      const d = formatAnyDate(ts);
      return d.iso ? h('time', {datetime: d.iso, title: d.full}, d.text) : 'never';
    };
    return h('tr', {},
      h('th', {scope: 'row'}, row.name),
      h('td', {}, when(row.created_at)),
      h('td', {}, row.last_used_at ? when(row.last_used_at) : 'never'),
      h('td', {class: 'actions'}, h('button', {type: 'button', class: 'button small danger',
        'aria-label': `Revoke ${row.name}`, onclick: () => this.revoke(row)}, 'Revoke')));
  }

  async create() {
    this.error.hidden = true;
    try {
      const made = await api.createAppPassword(this.name.value.trim());
      const secret = h('input', {type: 'text', readonly: true, value: made.password,
                                 class: 'link-url', 'aria-label': `App password for ${made.name}`});
      replace(this.created,
        h('p', {class: 'hint'}, `The app password for “${made.name}”. Copy it now: it is shown`
          + ' only once.'),
        h('div', {class: 'share-line'}, secret, h('button', {type: 'button', class: 'button',
          onclick: () => copyText(secret, 'app password', (m) => this.shell.notify(m))},
        'Copy app password')));
      this.created.hidden = false;
      this.name.value = '';
      this.shell.notify(`Created an app password for “${made.name}”.`);
      await Promise.all([this.refresh(), this.onChanged()]);
    } catch (err) {
      this.error.textContent = err.message;
      this.error.hidden = false;
    }
  }

  revoke(row) {
    return confirmAction({
      title: `Revoke “${row.name}”?`, confirm: 'Revoke',
      message: `Apps signed in with it stop working at once; “${row.name}” would need a new`
        + ' app password.',
      onConfirm: async () => {
        await api.revokeAppPassword(row.app_password_id);
        this.created.hidden = true; // a password shown for a revoked app is of no use now
        this.shell.notify(`Revoked the app password for “${row.name}”.`);
        await Promise.all([this.refresh(), this.onChanged()]);
      }});
  }
}
