// The trash: what the user deleted, where it was, when; restore it or delete it for good.

import {api} from './api.js';
import {confirmAction} from './dialogs.js';
import {h, icon, replace} from './dom.js';
import {formatAnyDate, formatSize, parentPath} from './format.js';

export class TrashView {
  constructor(shell) {
    this.shell = shell;
    this.entries = [];
    this.body = h('tbody', {});
    this.status = h('p', {class: 'listing-status', role: 'status'});
    this.emptyButton = h('button', {type: 'button', class: 'button danger',
                                    onclick: () => this.emptyTrash()}, 'Empty trash');
    this.el = h('section', {class: 'trash', 'aria-labelledby': 'trash-title'},
      h('div', {class: 'folder-head'}, h('h1', {id: 'trash-title', class: 'folder-title'}, 'Trash'),
        h('div', {class: 'toolbar'}, this.emptyButton)),
      h('p', {class: 'hint'}, 'Items in the trash do not count against your quota. Restore puts an item back where it was.'),
      h('div', {class: 'table-wrap'}, h('table', {class: 'listing trash-list', 'aria-labelledby': 'trash-title'},
        h('thead', {}, h('tr', {},
          h('th', {scope: 'col', class: 'name'}, 'Name'),
          h('th', {scope: 'col', class: 'where'}, 'Was in'),
          h('th', {scope: 'col', class: 'modified'}, 'Deleted'),
          h('th', {scope: 'col', class: 'size'}, 'Size'),
          h('th', {scope: 'col', class: 'actions'}, h('span', {class: 'visually-hidden'}, 'Actions')))),
        this.body)),
      this.status);
  }

  async open() {
    document.title = 'Trash – Drive';
    await this.refresh();
  }

  async refresh() {
    try {
      this.entries = (await api.listTrash()).entries;
    } catch (err) {
      this.shell.showError(err);
      return;
    }
    this.render();
  }

  render() {
    const n = this.entries.length;
    this.emptyButton.disabled = n === 0;
    this.status.textContent = n ? `${n.toLocaleString()} ${n === 1 ? 'item' : 'items'} in the trash` : '';
    if (!n) {
      replace(this.body, h('tr', {class: 'empty'}, h('td', {colspan: 5}, 'The trash is empty.')));
      return;
    }
    replace(this.body, this.entries.map((entry) => {
      const when = formatAnyDate(entry.trashed_at);
      return h('tr', {},
        h('td', {class: 'name'}, h('div', {class: 'cell-name'},
          icon(entry.is_directory ? 'folder' : 'file'), h('span', {}, entry.name))),
        h('td', {class: 'where'}, parentPath(entry.path) === '/' ? 'My drive'
          : parentPath(entry.path)),
        h('td', {class: 'modified'}, when.iso
          ? h('time', {datetime: when.iso, title: when.full}, when.text) : ''),
        h('td', {class: 'size'}, entry.is_directory ? '—' : formatSize(entry.size)),
        h('td', {class: 'actions'},
          h('button', {type: 'button', class: 'button', 'aria-label': `Restore ${entry.name}`,
                       onclick: () => this.restore(entry)}, 'Restore'),
          h('button', {type: 'button', class: 'button danger',
                       'aria-label': `Delete ${entry.name} forever`,
                       onclick: () => this.purge(entry)}, 'Delete forever')));
    }));
  }

  async restore(entry) {
    try {
      const restored = await api.restore(entry.file_id);
      this.shell.notify(`Restored “${entry.name}” to ${restored.path}.`);
    } catch (err) {
      this.shell.showError(err);
    }
    await this.refresh();
  }

  purge(entry) {
    return confirmAction({
      title: `Delete “${entry.name}” forever?`,
      message: entry.is_directory
        ? 'The folder, everything in it and all their versions will be gone. This cannot be undone.'
        : 'The file and all its versions will be gone. This cannot be undone.',
      confirm: 'Delete forever',
      onConfirm: async () => {
        await api.purge(entry.file_id);
        this.shell.notify(`Deleted “${entry.name}” forever.`);
        await this.refresh();
      },
    });
  }

  emptyTrash() {
    const items = [...this.entries];
    return confirmAction({
      title: 'Empty the trash?',
      message: `${items.length} ${items.length === 1 ? 'item' : 'items'} and all their versions will be gone. This cannot be undone.`,
      confirm: 'Empty trash',
      onConfirm: async () => {
        try {
          for (const entry of items) await api.purge(entry.file_id);
        } finally {
          await this.refresh();
        }
        this.shell.notify('The trash is empty.');
      },
    });
  }

  /** Whether a change in the feed may change the trash (a delete or a restore). */
  touches(change) {
    return change.action === 'delete' || change.action === 'restore';
  }
}
