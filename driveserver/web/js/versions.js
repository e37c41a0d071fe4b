// A file's version history: every version the server keeps, who made it and from which
// device; download any of them, or restore one (a new version with its content, so restoring
// loses nothing: the version it replaces stays in the list).

import {api, contentUrl} from './api.js';
import {confirmAction, openDialog} from './dialogs.js';
import {h, replace} from './dom.js';
import {formatDate, formatSize} from './format.js';

/** "alice@example.com · alice-laptop": who made a version, and with what. */
function author(v) {
  return [v.modified_by, v.device].filter(Boolean).join(' · ') || 'unknown';
}

function versionRow(entry, v, current, onRestore) {
  const date = formatDate(v.modified_at);
  const label = `Version ${v.version}`;
  return h('tr', {dataset: {version: v.version}},
    h('th', {scope: 'row'}, label, current ? h('span', {class: 'badge'}, 'current') : null,
      v.restored_from ? h('span', {class: 'version-note'}, ` restored from ${v.restored_from}`)
        : null),
    h('td', {class: 'size'}, formatSize(v.size)),
    h('td', {}, date.iso ? h('time', {datetime: date.iso, title: date.full}, date.text) : ''),
    h('td', {class: 'version-author'}, author(v)),
    h('td', {class: 'actions'},
      h('a', {class: 'button small', href: contentUrl(entry.file_id, v.version),
              download: entry.name, 'aria-label': `Download version ${v.version}`}, 'Download'),
      current ? null : h('button', {type: 'button', class: 'button small',
        'aria-label': `Restore version ${v.version}`, onclick: () => onRestore(v)}, 'Restore')));
}

/**
 * Show the versions of file `entry`; `onRestored()` runs after a restore (the listing
 * re-reads: the size and date changed). Resolves when the dialog closes.
 */
export function showVersions(entry, {notify, onRestored}) {
  return openDialog({title: `Versions of “${entry.name}”`, className: 'wide', build: (close) => {
    const body = h('tbody', {});
    const status = h('p', {class: 'listing-status', role: 'status'}, 'Loading…');
    const error = h('p', {class: 'dialog-error', role: 'alert', hidden: true});
    const fail = (err) => {
      error.textContent = err.message || String(err);
      error.hidden = false;
    };
    const load = async () => {
      const {versions} = await api.versions(entry.file_id);
      const newest = versions.length ? versions[0].version : null;
      replace(body, versions.map((v) => versionRow(entry, v, v.version === newest, restore)));
      status.textContent = `${versions.length} ${versions.length === 1 ? 'version' : 'versions'}`;
    };
    const restore = (v) => confirmAction({
      title: `Restore version ${v.version}?`, confirm: 'Restore', danger: false,
      message: `“${entry.name}” gets the content of version ${v.version} as a new version; `
        + 'the current one stays in this list.',
      onConfirm: async () => {
        const done = await api.restoreVersion(entry.file_id, v.version);
        notify(`Restored version ${v.version} of “${entry.name}” (now version ${done.version}).`);
        await load();
        onRestored();
      }});
    load().catch((err) => {
      status.textContent = '';
      fail(err);
    });
    return h('div', {class: 'dialog-form'},
      h('div', {class: 'table-wrap'}, h('table', {class: 'listing versions'},
        h('thead', {}, h('tr', {},
          ['Version', 'Size', 'Date', 'By', ''].map((t) => h('th', {scope: 'col'}, t)))),
        body)),
      status, error,
      h('div', {class: 'dialog-buttons'},
        h('button', {type: 'button', class: 'button', onclick: () => close(null)}, 'Close')));
  }});
}
