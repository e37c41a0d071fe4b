// Search by name across everything the user sees (GET /api/search): their drive, what they
// shared and what is shared with them. A result opens its folder, or downloads the file.

import {api} from './api.js';
import {h, icon, replace} from './dom.js';
import {formatDate, formatSize, parentPath} from './format.js';
import {folderHash, searchHash} from './routes.js';

/** The search box of the top bar: Enter goes to #/search/<text>. */
export function searchBox() {
  const input = h('input', {type: 'search', id: 'search-input', name: 'q', maxlength: 200,
                            placeholder: 'Search', autocomplete: 'off'});
  const form = h('form', {role: 'search', class: 'search-box'},
    h('label', {for: 'search-input', class: 'visually-hidden'}, 'Search by name'), input);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = input.value.trim();
    if (q) location.hash = searchHash(q);
  });
  return {el: form, input};
}

export class SearchView {
  constructor(shell) {
    this.shell = shell;
    this.title = h('h1', {id: 'search-title', class: 'folder-title'}, 'Search');
    this.body = h('tbody', {});
    this.status = h('p', {class: 'listing-status', role: 'status'});
    this.more = h('button', {type: 'button', class: 'button', hidden: true,
                             onclick: () => this.load(true)}, 'Show more');
    this.el = h('section', {class: 'search', 'aria-labelledby': 'search-title'},
      h('div', {class: 'folder-head'}, this.title),
      h('div', {class: 'table-wrap'}, h('table', {class: 'listing', 'aria-labelledby': 'search-title'},
        h('thead', {}, h('tr', {},
          h('th', {scope: 'col', class: 'name'}, 'Name'),
          h('th', {scope: 'col', class: 'where'}, 'In'),
          h('th', {scope: 'col', class: 'size'}, 'Size'),
          h('th', {scope: 'col', class: 'modified'}, 'Modified'))),
        this.body)),
      this.status, this.more);
    this.q = '';
    this.cursor = null;
    this.entries = [];
  }

  async open(q) {
    this.q = q;
    document.title = `“${q}” – Search – Drive`;
    this.title.textContent = `Results for “${q}”`;
    this.entries = [];
    this.cursor = null;
    await this.load(false);
  }

  async load(more) {
    const q = this.q;
    this.status.textContent = 'Searching…';
    let page;
    try {
      page = await api.search(q, more ? this.cursor : undefined);
    } catch (err) {
      this.status.textContent = '';
      this.shell.showError(err);
      return;
    }
    if (q !== this.q) return; // another search began meanwhile
    this.entries = this.entries.concat(page.entries);
    this.cursor = page.has_more ? page.next_cursor : null;
    this.more.hidden = !page.has_more;
    this.render();
  }

  /** Results may change with any change elsewhere; re-asked at most once per burst. */
  touches() {
    return Boolean(this.q);
  }

  async refresh() {
    if (this.q) await this.open(this.q);
  }

  render() {
    const n = this.entries.length;
    this.status.textContent = n ? `${n.toLocaleString()} ${n === 1 ? 'result' : 'results'}`
      : 'Nothing found.';
    replace(this.body, this.entries.map((entry) => {
      const folder = parentPath(entry.path);
      const open = entry.is_directory
        ? h('a', {href: folderHash(entry.path)}, entry.name)
        : h('a', {href: `/api/files/${encodeURIComponent(entry.file_id)}/content`,
                  download: entry.name}, entry.name);
      const date = formatDate(entry.modified_at);
      return h('tr', {},
        h('td', {class: 'name'}, h('div', {class: 'cell-name'},
          icon(entry.is_directory ? 'folder' : 'file'), open)),
        h('td', {class: 'where'}, h('a', {href: folderHash(folder)},
                                         folder === '/' ? 'My drive' : folder)),
        h('td', {class: 'size'}, entry.is_directory ? '—' : formatSize(entry.size)),
        h('td', {class: 'modified'}, h('time', {datetime: date.iso, title: date.full}, date.text)));
    }));
  }
}
