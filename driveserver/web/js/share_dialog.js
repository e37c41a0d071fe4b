// Sharing one item: people (folders only: a file is shared by link) with view or edit
// permission, and public links with an optional password, expiry and download switch. Every
// change is one API call made while the dialog is open; its error shows inside the dialog.
// A link's URL exists only in the answer that created it (the server keeps its hash), so it is
// shown once, with a Copy button, and the list after that names links by their settings.

import {api} from './api.js';
import {copyText} from './clipboard.js';
import {openDialog} from './dialogs.js';
import {h, replace} from './dom.js';
import {formatAnyDate} from './format.js';

const PERMISSIONS = [['view', 'Can view'], ['edit', 'Can edit']];

/** "Shared with 1 person, 1 link": what the listing's badge says (null when not shared). */
export function sharedLabel(shared) {
  if (!shared || !(shared.people || shared.links)) return null;
  const parts = [];
  if (shared.people) parts.push(`${shared.people} ${shared.people === 1 ? 'person' : 'people'}`);
  if (shared.links) parts.push(`${shared.links} ${shared.links === 1 ? 'link' : 'links'}`);
  return `Shared with ${parts.join(', ')}`;
}

function permissionSelect(value, label, onchange) {
  return h('select', {'aria-label': label, onchange},
    PERMISSIONS.map(([v, text]) => h('option', {value: v, selected: v === value}, text)));
}

/** An ISO time with its zone from a date-time input's local value (or null when empty). */
function expiryFrom(value) {
  if (!value) return null;
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new Error('The expiry date is not a date.');
  return date.toISOString();
}

/**
 * The share dialog for `entry` (a folder or file in the user's own drive). `onChanged()` runs
 * after each change, so the listing's shared badge follows.
 */
export function shareDialog(entry, {notify, onChanged}) {
  return openDialog({title: `Share “${entry.name}”`, className: 'wide', build: (close) => {
    const error = h('p', {class: 'dialog-error', role: 'alert', hidden: true});
    const run = async (work) => {
      error.hidden = true;
      try {
        await work();
        onChanged();
      } catch (err) {
        error.textContent = err.message || String(err);
        error.hidden = false;
      }
    };

    // --- people ---------------------------------------------------------------------------
    const people = h('ul', {class: 'share-list', 'aria-label': 'People with access'});
    const loadPeople = async () => {
      const {shares} = await api.shares(entry.file_id);
      replace(people, shares.length ? shares.map((s) => h('li', {class: 'share-line'},
        h('span', {class: 'share-who'}, s.email),
        permissionSelect(s.permission, `Permission for ${s.email}`, (event) => run(async () => {
          await api.changeShare(s.share_id, event.target.value);
          notify(`${s.email} ${event.target.value === 'edit' ? 'can edit' : 'can view'} now.`);
        })),
        h('button', {type: 'button', class: 'button small danger',
                     'aria-label': `Stop sharing with ${s.email}`,
                     onclick: () => run(async () => {
                       await api.endShare(s.share_id);
                       notify(`Stopped sharing with ${s.email}.`);
                       await loadPeople();
                     })}, 'Remove')))
        : h('li', {class: 'empty'}, 'Not shared with anyone.'));
    };
    const email = h('input', {id: 'share-email', type: 'email', required: true,
                              autocomplete: 'off', placeholder: 'name@example.com'});
    const newPermission = permissionSelect('view', 'Permission', null);
    const addPerson = h('form', {class: 'share-add', novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const address = email.value.trim();
      if (!address) return;
      run(async () => {
        await api.share(entry.file_id, address, newPermission.value);
        notify(`Shared “${entry.name}” with ${address}.`);
        email.value = '';
        await loadPeople();
      });
    }}, h('label', {for: 'share-email'}, 'Share with (email)'), email, newPermission,
      h('button', {type: 'submit', class: 'button primary'}, 'Share'));

    // --- links ----------------------------------------------------------------------------
    const links = h('ul', {class: 'share-list', 'aria-label': 'Links'});
    const created = h('div', {class: 'link-created', hidden: true});
    const loadLinks = async () => {
      const list = (await api.links(entry.file_id)).links;
      replace(links, list.length ? list.map((l, i) => h('li', {class: 'share-line'},
        h('span', {class: 'share-who'}, `Link ${i + 1}: `,
          [l.has_password ? 'password' : 'no password',
           l.allow_download ? 'download allowed' : 'view only',
           l.expires_at ? `${l.expired ? 'expired' : 'expires'} ${formatAnyDate(l.expires_at).text}`
             : 'no expiry'].join(', ')),
        h('button', {type: 'button', class: 'button small danger',
                     'aria-label': `Revoke link ${i + 1}`, onclick: () => run(async () => {
                       await api.revokeLink(l.link_id);
                       notify('Link revoked.');
                       await loadLinks();
                     })}, 'Revoke')))
        : h('li', {class: 'empty'}, 'No links.'));
    };
    const field = (id, label, input) => h('div', {class: 'link-field'},
      h('label', {for: id}, label), input);
    const password = h('input', {id: 'link-password', type: 'password', autocomplete: 'new-password',
                                 minlength: 8});
    const expires = h('input', {id: 'link-expires', type: 'datetime-local'});
    const allowDownload = h('input', {id: 'link-download', type: 'checkbox', checked: true});
    const addLink = h('form', {class: 'link-add', novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      run(async () => {
        const options = {allow_download: allowDownload.checked};
        if (password.value) options.password = password.value;
        const expiry = expiryFrom(expires.value);
        if (expiry) options.expires_at = expiry;
        const link = await api.createLink(entry.file_id, options);
        password.value = '';
        const url = h('input', {type: 'text', readonly: true, value: link.url,
                                'aria-label': 'New link', class: 'link-url'});
        replace(created, h('p', {class: 'hint'}, 'Copy the link now: it is shown only once.'),
          h('div', {class: 'share-line'}, url, h('button', {type: 'button', class: 'button',
            onclick: () => copyText(url, 'link', notify)}, 'Copy link')));
        created.hidden = false;
        notify('Link created.');
        await loadLinks();
      });
    }},
      field('link-password', 'Password (optional, 8 characters or more)', password),
      field('link-expires', 'Expires (optional)', expires),
      h('div', {class: 'link-field check'}, allowDownload,
        h('label', {for: 'link-download'}, 'Allow download')),
      h('button', {type: 'submit', class: 'button primary'}, 'Create link'));

    const loads = [loadLinks()];
    if (entry.is_directory) loads.push(loadPeople());
    Promise.all(loads).catch((err) => {
      error.textContent = err.message || String(err);
      error.hidden = false;
    });
    return h('div', {class: 'dialog-form share-dialog'},
      entry.is_directory ? h('section', {'aria-label': 'People'},
        h('h3', {}, 'People'), people, addPerson) : null,
      h('section', {'aria-label': 'Public links'}, h('h3', {}, 'Links'), links, created, addLink),
      error,
      h('div', {class: 'dialog-buttons'},
        h('button', {type: 'button', class: 'button', onclick: () => close(null)}, 'Close')));
  }});
}
