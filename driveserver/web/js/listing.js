// The folder view: breadcrumbs, toolbar, and the listing as a keyboard-driven grid.
//
// A folder may hold 10,000 entries: they are all loaded (folder_data.js) and sorted in
// memory, but only the rows near the screen are in the DOM (row_window.js). Selection is a set
// of entry keys, so it survives re-sorting and refreshes; the keyboard moves a focus index.

import {contentUrl} from './api.js';
import {h, icon, replace} from './dom.js';
import {entryKey, loadFolder, sortEntries} from './folder_data.js';
import {formatDate, formatSize, parentPath, pathParts} from './format.js';
import {folderActions} from './folder_actions.js';
import {folderHash} from './routes.js';
import {RowWindow} from './row_window.js';
import {sharedLabel} from './share_dialog.js';

const SHARED_ROOT = '/Shared with me';
const COLUMNS = [['name', 'Name'], ['size', 'Size'], ['modified', 'Modified']];

/** The owner's mark on an item shared with people or by link ("Shared with 1 person, 1 link"). */
function sharedBadge(shared) {
  const label = sharedLabel(shared);
  return label ? h('span', {class: 'badge shared-badge', role: 'img', 'aria-label': label,
                            title: label}, icon('shared')) : null;
}

export class FolderView {
  constructor(shell) {
    this.shell = shell;
    this.actions = folderActions(this, shell);
    this.sort = {key: 'name', dir: 1};
    this.path = null; // nothing open yet
    this.entries = [];
    this.view = [];
    this.selected = new Set();
    this.anchor = 0;
    this.focus = 0;
    this.loading = null;
    this.build();
  }

  build() {
    this.title = h('h1', {id: 'folder-title', class: 'folder-title'});
    this.crumbs = h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumb'});
    this.toolbar = this.actions.toolbar();
    this.checkAll = h('input', {type: 'checkbox', 'aria-label': 'Select all',
                                onchange: () => this.selectAll(this.checkAll.checked)});
    this.head = h('tr', {}, h('th', {class: 'sel', scope: 'col'}, this.checkAll),
      COLUMNS.map(([key, label]) => h('th', {scope: 'col', class: key, dataset: {key}},
        h('button', {type: 'button', class: 'sort', onclick: () => this.sortBy(key)}, label))));
    this.body = h('tbody', {});
    this.grid = h('table', {class: 'listing', role: 'grid', 'aria-labelledby': 'folder-title',
                            'aria-multiselectable': 'true', tabindex: -1},
      h('thead', {}, this.head), this.body);
    this.rows = new RowWindow(this.body, {columns: 4, focused: () => this.focus,
                                          renderRow: (i) => this.row(this.view[i], i)});
    this.status = h('p', {class: 'listing-status', role: 'status'});
    this.el = h('section', {class: 'folder', 'aria-labelledby': 'folder-title'},
      this.crumbs, h('div', {class: 'folder-head'}, this.title, this.toolbar),
      h('div', {class: 'table-wrap'}, this.grid), this.status);
    this.actions.acceptDrops(this.el);
    this.body.addEventListener('click', (e) => this.onClick(e));
    this.body.addEventListener('dblclick', (e) => this.onDoubleClick(e));
    this.body.addEventListener('change', (e) => this.onCheckbox(e));
    this.grid.addEventListener('keydown', (e) => this.onKey(e));
  }

  /** Show the folder at `path` (from the address bar). */
  async open(path) {
    const moved = this.path === null || path.toLowerCase() !== this.path.toLowerCase();
    this.path = path;
    if (moved) {
      this.selected.clear();
      this.focus = this.anchor = 0;
      this.entries = [];
      this.view = [];
      this.complete = false;
      window.scrollTo({top: 0});
      this.renderHead();
      this.renderRows();
      this.status.textContent = 'Loading…';
    }
    await this.refresh({fresh: moved});
  }

  /**
   * Read the open folder again (after an action, or a change seen in the feed). A folder just
   * opened shows each page as it comes; one already shown is replaced once it is read whole,
   * so that a refresh never drops the selection or the focus beyond its first page.
   */
  async refresh({fresh = false} = {}) {
    if (this.loading) this.loading.abort();
    const loading = this.loading = new AbortController();
    const focusedKey = this.view[this.focus] ? entryKey(this.view[this.focus]) : null;
    let first = true;
    try {
      await loadFolder(this.path, loading.signal, ({path, fileId, entries, done}) => {
        if (!fresh && !done) return;
        this.path = path;
        this.fileId = fileId;
        this.entries = entries;
        this.complete = done;
        this.resort(focusedKey);
        if (first) {
          first = false;
          this.renderHead();
          if (fresh) this.focusRow(this.focus, {scroll: false});
        }
      });
    } catch (err) {
      if (err.name === 'AbortError') return;
      this.status.textContent = '';
      this.shell.showError(err);
    } finally {
      if (this.loading === loading) this.loading = null;
    }
  }

  resort(focusedKey = null) {
    this.view = sortEntries(this.entries, this.sort);
    const keys = new Set(this.view.map(entryKey));
    for (const key of this.selected) if (!keys.has(key)) this.selected.delete(key);
    if (focusedKey) {
      const index = this.view.findIndex((e) => entryKey(e) === focusedKey);
      if (index >= 0) this.focus = index;
    }
    this.focus = Math.min(this.focus, Math.max(0, this.view.length - 1));
    this.anchor = Math.min(this.anchor, Math.max(0, this.view.length - 1));
    this.renderRows();
  }

  renderHead() {
    const parts = pathParts(this.path);
    const name = parts.length ? parts[parts.length - 1] : 'My drive';
    document.title = `${name} – Drive`;
    this.title.textContent = name;
    this.crumbs.hidden = !parts.length; // at the top, the title says it all
    replace(this.crumbs, h('ol', {},
      h('li', {}, h('a', {href: folderHash('/'), 'aria-current': parts.length ? null : 'page'},
                    'My drive')),
      parts.map((part, i) => h('li', {}, h('a', {
        href: folderHash(`/${parts.slice(0, i + 1).join('/')}`),
        'aria-current': i === parts.length - 1 ? 'page' : null}, part)))));
    for (const th of this.head.querySelectorAll('th[data-key]')) {
      const key = th.dataset.key;
      th.setAttribute('aria-sort', key !== this.sort.key ? 'none'
        : this.sort.dir > 0 ? 'ascending' : 'descending');
    }
    this.actions.update();
  }

  renderRows() {
    this.grid.setAttribute('aria-rowcount', String(this.view.length + 1));
    if (this.view.length) {
      this.rows.render(this.view.length);
    } else {
      this.body.replaceChildren(h('tr', {class: 'empty'}, h('td', {colspan: 4},
        this.path === SHARED_ROOT ? 'Nothing is shared with you yet.' : 'This folder is empty.')));
    }
    this.updateStatus();
    this.actions.update();
    this.updateCheckAll();
  }

  updateStatus() {
    const n = this.view.length;
    const count = `${n.toLocaleString()} ${n === 1 ? 'item' : 'items'}`;
    this.status.textContent = this.complete ? count : `${count}, loading more…`;
  }

  row(entry, index) {
    const key = entryKey(entry);
    const selected = this.selected.has(key);
    const date = formatDate(entry.modified_at);
    const link = entry.is_directory
      ? h('a', {href: folderHash(entry.path), tabindex: -1}, entry.name)
      : h('a', {href: contentUrl(entry.file_id), download: entry.name, tabindex: -1}, entry.name);
    return h('tr', {tabindex: index === this.focus ? 0 : -1, 'aria-selected': String(selected),
                    'aria-rowindex': index + 2, dataset: {index}},
      h('td', {class: 'sel'}, h('input', {type: 'checkbox', tabindex: -1, checked: selected,
        disabled: !entry.file_id, 'aria-label': `Select ${entry.name}`})),
      h('td', {class: 'name'}, h('div', {class: 'cell-name'},
        icon(entry.virtual || entry.permission ? 'shared' : entry.is_directory ? 'folder'
          : entry.symlink ? 'link' : 'file'), link,
        entry.permission ? h('span', {class: 'badge'}, entry.permission === 'edit'
          ? 'can edit' : 'view only') : null, sharedBadge(entry.shared))),
      h('td', {class: 'size'}, entry.is_directory ? '—' : formatSize(entry.size)),
      h('td', {class: 'modified'},
        date.iso ? h('time', {datetime: date.iso, title: date.full}, date.text) : ''));
  }

  rowAt(index) {
    return this.rows.rowAt(index);
  }

  indexOf(event) {
    const tr = event.target.closest('tr[data-index]');
    return tr ? Number(tr.dataset.index) : -1;
  }

  /** The selected entries, in view order. */
  selection() {
    return this.view.filter((e) => this.selected.has(entryKey(e)));
  }

  // --- selection -------------------------------------------------------------------------

  /** Bring the rendered rows, the select-all box and the toolbar in line with the state. */
  updateSelection() {
    for (const tr of this.body.querySelectorAll('tr[data-index]')) {
      const i = Number(tr.dataset.index);
      const on = this.selected.has(entryKey(this.view[i]));
      tr.setAttribute('aria-selected', String(on));
      tr.tabIndex = i === this.focus ? 0 : -1;
      tr.querySelector('input').checked = on;
    }
    this.updateCheckAll();
    this.actions.update();
  }

  updateCheckAll() {
    const selectable = this.view.filter((e) => e.file_id).length;
    this.checkAll.checked = selectable > 0 && this.selected.size === selectable;
    this.checkAll.indeterminate = this.selected.size > 0 && this.selected.size < selectable;
  }

  select(index, {toggle = false, range = false} = {}) {
    const entry = this.view[index];
    if (!entry) return;
    if (range) {
      const [lo, hi] = [Math.min(this.anchor, index), Math.max(this.anchor, index)];
      if (!toggle) this.selected.clear();
      for (let i = lo; i <= hi; i++) if (this.view[i].file_id) this.selected.add(entryKey(this.view[i]));
    } else {
      const key = entryKey(entry);
      const was = this.selected.has(key);
      if (!toggle) this.selected.clear();
      if (entry.file_id && !(toggle && was)) this.selected.add(key);
      else if (toggle) this.selected.delete(key);
      this.anchor = index;
    }
    this.focus = index;
    this.updateSelection();
  }

  selectAll(on) {
    this.selected.clear();
    if (on) for (const e of this.view) if (e.file_id) this.selected.add(entryKey(e));
    this.updateSelection();
  }

  /** Select exactly the entry with `key` (after creating or renaming it) and focus it. */
  selectKey(key) {
    const index = this.view.findIndex((e) => entryKey(e) === key);
    if (index < 0) return;
    this.anchor = index;
    this.selected = new Set([key]);
    this.focusRow(index);
  }

  /** Move the focus to row `index`, scrolling it into view unless `scroll` is false. */
  focusRow(index, {scroll = true} = {}) {
    if (!this.view.length) return;
    this.focus = Math.max(0, Math.min(index, this.view.length - 1));
    this.updateSelection();
    const tr = scroll ? this.rows.reveal(this.focus) : this.rowAt(this.focus);
    if (tr) {
      tr.tabIndex = 0;
      tr.focus({preventScroll: true});
    }
  }

  // --- mouse and keyboard ----------------------------------------------------------------

  onClick(event) {
    const index = this.indexOf(event);
    if (index < 0 || event.target.closest('input, a')) return;
    this.select(index, {toggle: event.ctrlKey || event.metaKey, range: event.shiftKey});
    this.focusRow(index, {scroll: false});
  }

  onCheckbox(event) {
    const index = this.indexOf(event);
    if (index < 0) return;
    this.select(index, {toggle: true});
  }

  onDoubleClick(event) {
    const index = this.indexOf(event);
    if (index >= 0 && !event.target.closest('input, a')) this.openEntry(this.view[index]);
  }

  /** Grid keys: arrows, Home/End, Space, Enter, Ctrl+A, Delete, F2 and Escape. */
  onKey(event) {
    if (event.target.closest('input:not([type=checkbox]), button')) return;
    const last = this.view.length - 1;
    const move = {ArrowDown: this.focus + 1, ArrowUp: this.focus - 1, Home: 0, End: last,
                  PageDown: this.focus + 10, PageUp: this.focus - 10}[event.key];
    const ctrl = event.ctrlKey || event.metaKey;
    if (move !== undefined && !(event.key === 'ArrowUp' && event.altKey)) {
      event.preventDefault();
      const to = Math.max(0, Math.min(move, last));
      if (ctrl) this.focusRow(to);
      else {
        this.select(to, {range: event.shiftKey});
        this.focusRow(to);
      }
    } else if (event.key === ' ') {
      event.preventDefault();
      this.select(this.focus, {toggle: true});
    } else if (event.key === 'Enter') {
      event.preventDefault();
      if (this.view[this.focus]) this.openEntry(this.view[this.focus]);
    } else if (ctrl && event.key.toLowerCase() === 'a') {
      event.preventDefault();
      this.selectAll(true);
    } else if (event.key === 'Delete') {
      event.preventDefault();
      this.actions.trash();
    } else if (event.key === 'F2') {
      event.preventDefault();
      this.actions.rename();
    } else if (event.key === 'Escape') {
      this.selectAll(false);
    }
  }

  /** Backspace or Alt+Up anywhere in the view (not while typing): the parent folder. */
  onGlobalKey(event) {
    if (event.target.closest('input, textarea, select, dialog, [contenteditable]')) return;
    const up = event.key === 'Backspace' || (event.key === 'ArrowUp' && event.altKey);
    if (up && this.path !== '/') {
      event.preventDefault();
      location.hash = folderHash(parentPath(this.path));
    }
  }

  openEntry(entry) {
    if (entry.is_directory) {
      location.hash = folderHash(entry.path);
    } else {
      const tr = this.rowAt(this.view.indexOf(entry));
      const link = tr && tr.querySelector('a');
      if (link) link.click();
    }
  }

  sortBy(key) {
    this.sort = {key, dir: this.sort.key === key ? -this.sort.dir : 1};
    const focusedKey = this.view[this.focus] ? entryKey(this.view[this.focus]) : null;
    this.renderHead();
    this.resort(focusedKey);
  }

  /** Whether a change at `path` (or moved from `oldPath`) shows in this folder. */
  touches(path, oldPath) {
    const here = this.path.toLowerCase();
    return [path, oldPath].some((p) => p && (parentPath(p).toLowerCase() === here ||
                                             here.startsWith(`${p.toLowerCase()}/`) ||
                                             p.toLowerCase() === here));
  }
}
