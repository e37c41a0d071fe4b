// The folder view: breadcrumbs, toolbar, and the listing as a keyboard-driven grid, shown as a
// list (a table) or as tiles with thumbnails of images (chosen by a toggle, kept per browser).
//
// A folder may hold 10,000 entries: they are all loaded (folder_data.js) and sorted in
// memory, but only the rows (or lines of tiles) near the screen are in the DOM (row_window.js,
// tile_window.js). Selection is a set of entry keys, so it survives re-sorting, refreshes and
// a change of view; the keyboard moves a focus index.

import {entryRow, entryTile} from './entry_cells.js';
import {h, replace} from './dom.js';
import {entryKey, loadFolder, sortEntries} from './folder_data.js';
import {parentPath, pathParts} from './format.js';
import {folderActions} from './folder_actions.js';
import {folderHash} from './routes.js';
import {RowWindow} from './row_window.js';
import {TileWindow} from './tile_window.js';

const SHARED_ROOT = '/Shared with me';
const COLUMNS = [['name', 'Name'], ['size', 'Size'], ['modified', 'Modified']];
const VIEW_KEY = 'drive-view'; // localStorage: 'grid' or 'list'
const SORTS = [['name:1', 'Name, A to Z'], ['name:-1', 'Name, Z to A'],
               ['modified:-1', 'Newest first'], ['modified:1', 'Oldest first'],
               ['size:-1', 'Largest first'], ['size:1', 'Smallest first']];

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
    this.mode = readMode();
    this.build();
    this.setMode(this.mode);
  }

  /** The window now showing: the list's rows or the grid's tiles. */
  get win() {
    return this.mode === 'grid' ? this.tileWindow : this.rows;
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
    this.tiles = h('div', {class: 'tiles', role: 'grid', 'aria-labelledby': 'folder-title',
                           'aria-multiselectable': 'true', tabindex: -1});
    this.tileWindow = new TileWindow(this.tiles, {focused: () => this.focus,
                                                  renderTile: (i) => this.tile(this.view[i], i)});
    this.viewToggle = h('button', {type: 'button', class: 'button small view-toggle',
                                   'aria-pressed': 'false',
                                   onclick: () => this.setMode(this.mode === 'grid' ? 'list' : 'grid')},
                        'Grid view');
    // The list sorts by its column heads; the grid has none, so it gets this instead.
    this.sortSelect = h('select', {class: 'sort-select', 'aria-label': 'Sort by',
                                   onchange: () => this.sortFrom(this.sortSelect.value)},
      SORTS.map(([value, label]) => h('option', {value}, label)));
    this.status = h('p', {class: 'listing-status', role: 'status'});
    this.tableWrap = h('div', {class: 'table-wrap'}, this.grid);
    this.el = h('section', {class: 'folder', 'aria-labelledby': 'folder-title'},
      this.crumbs, h('div', {class: 'folder-head'}, this.title,
        h('div', {class: 'view-controls'}, this.sortSelect, this.viewToggle), this.toolbar),
      this.tableWrap, this.tiles, this.status);
    this.actions.acceptDrops(this.el);
    for (const area of [this.body, this.tiles]) {
      area.addEventListener('click', (e) => this.onClick(e));
      area.addEventListener('dblclick', (e) => this.onDoubleClick(e));
      area.addEventListener('change', (e) => this.onCheckbox(e));
    }
    this.grid.addEventListener('keydown', (e) => this.onKey(e));
    this.tiles.addEventListener('keydown', (e) => this.onKey(e));
  }

  /** Show the folder as a list or as tiles; the choice is kept for the next visit. */
  setMode(mode) {
    const hadFocus = this.el.contains(document.activeElement) &&
      !this.viewToggle.contains(document.activeElement);
    this.mode = mode;
    try {
      localStorage.setItem(VIEW_KEY, mode);
    } catch {
      // storage off (private window): the choice lasts for this page only
    }
    this.viewToggle.setAttribute('aria-pressed', String(mode === 'grid'));
    this.tableWrap.hidden = mode === 'grid';
    this.tiles.hidden = mode !== 'grid';
    this.sortSelect.hidden = mode !== 'grid';
    this.rows.active = mode !== 'grid';
    this.tileWindow.active = mode === 'grid';
    if (this.path !== null) {
      this.renderRows();
      if (hadFocus) this.focusRow(this.focus);
    }
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
    this.sortSelect.value = `${this.sort.key}:${this.sort.dir}`;
    for (const th of this.head.querySelectorAll('th[data-key]')) {
      const key = th.dataset.key;
      th.setAttribute('aria-sort', key !== this.sort.key ? 'none'
        : this.sort.dir > 0 ? 'ascending' : 'descending');
    }
    this.actions.update();
  }

  renderRows() {
    this.grid.setAttribute('aria-rowcount', String(this.view.length + 1));
    const empty = this.path === SHARED_ROOT ? 'Nothing is shared with you yet.'
      : 'This folder is empty.';
    if (this.view.length) {
      this.win.render(this.view.length);
    } else if (this.mode === 'grid') {
      this.tiles.replaceChildren(h('div', {role: 'row', class: 'empty'},
                                   h('div', {role: 'gridcell'}, empty)));
    } else {
      this.body.replaceChildren(h('tr', {class: 'empty'}, h('td', {colspan: 4}, empty)));
    }
    this.tiles.setAttribute('aria-rowcount',
                            String(Math.ceil(this.view.length / this.tileWindow.cols)));
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
    return entryRow(entry, index, this.selected.has(entryKey(entry)), index === this.focus);
  }

  tile(entry, index) {
    return entryTile(entry, index, this.selected.has(entryKey(entry)), index === this.focus);
  }

  rowAt(index) {
    return this.win.rowAt(index);
  }

  indexOf(event) {
    const item = event.target.closest('[data-index]');
    return item ? Number(item.dataset.index) : -1;
  }

  /** The selected entries, in view order. */
  selection() {
    return this.view.filter((e) => this.selected.has(entryKey(e)));
  }

  // --- selection -------------------------------------------------------------------------

  /** Bring the rendered rows, the select-all box and the toolbar in line with the state. */
  updateSelection() {
    const area = this.mode === 'grid' ? this.tiles : this.body;
    for (const item of area.querySelectorAll('[data-index]')) {
      const i = Number(item.dataset.index);
      const on = this.selected.has(entryKey(this.view[i]));
      item.setAttribute('aria-selected', String(on));
      item.tabIndex = i === this.focus ? 0 : -1;
      item.querySelector('input').checked = on;
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
    const tr = scroll ? this.win.reveal(this.focus) : this.rowAt(this.focus);
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

  /** Grid keys: arrows, Home/End, Space, Enter, Ctrl+A, Delete, F2 and Escape. In the grid
   * view Left/Right go tile by tile and Up/Down line by line. */
  onKey(event) {
    if (event.target.closest('input:not([type=checkbox]), button')) return;
    const last = this.view.length - 1;
    const line = this.mode === 'grid' ? this.tileWindow.cols : 1;
    const moves = {ArrowDown: this.focus + line, ArrowUp: this.focus - line, Home: 0, End: last,
                   PageDown: this.focus + 10 * line, PageUp: this.focus - 10 * line};
    if (this.mode === 'grid') Object.assign(moves, {ArrowLeft: this.focus - 1,
                                                    ArrowRight: this.focus + 1});
    const move = moves[event.key];
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
    this.sortFrom(`${key}:${this.sort.key === key ? -this.sort.dir : 1}`);
  }

  /** Sort by `key:dir` (the grid's select; the list's heads go through sortBy). */
  sortFrom(value) {
    const [key, dir] = value.split(':');
    this.sort = {key, dir: Number(dir)};
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

function readMode() {
  try {
    return localStorage.getItem(VIEW_KEY) === 'grid' ? 'grid' : 'list';
  } catch {
    return 'list';
  }
}
