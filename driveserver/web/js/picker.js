// The move dialog: browse folders (your drive and /Shared with me) and choose where to move.

import {api} from './api.js';
import {openDialog} from './dialogs.js';
import {h, icon, replace} from './dom.js';
import {baseName, isWithin, joinPath, parentPath, pathParts} from './format.js';

const PAGE = 5000;
const MAX_FOLDERS = 20000; // enough for any real folder; bounds what one dialog holds

/** The subfolders of `path`, every page of them. */
async function subfolders(path) {
  const folders = [];
  let cursor;
  let canonical = path;
  do {
    const page = await api.list(path, PAGE, cursor);
    canonical = page.path;
    folders.push(...page.entries.filter((e) => e.is_directory));
    cursor = page.has_more ? page.next_cursor : undefined;
  } while (cursor && folders.length < MAX_FOLDERS);
  return {path: canonical, folders};
}

/**
 * Choose a destination folder for `items` (entries with their paths), starting at `start`.
 * `onMove(destination)` runs while the dialog is open; resolves with its result, or null.
 */
export function pickFolder({items, start, onMove}) {
  const moving = items.map((e) => e.path);
  const blocked = (path) => moving.some((p) => isWithin(path, p));
  return openDialog({title: items.length === 1 ? `Move “${items[0].name}”` : `Move ${items.length} items`,
                     className: 'picker', build: (close) => {
    let current = start;
    const crumbs = h('nav', {class: 'crumbs', 'aria-label': 'Destination folder'});
    const list = h('ul', {class: 'picker-list', 'aria-label': 'Folders'});
    const error = h('p', {class: 'dialog-error', role: 'alert', hidden: true});
    const here = h('button', {type: 'submit', class: 'button primary'}, 'Move here');
    const showError = (err) => {
      error.textContent = err ? err.message : '';
      error.hidden = !err;
    };

    async function go(path) {
      showError(null);
      list.setAttribute('aria-busy', 'true');
      try {
        const {path: canonical, folders} = await subfolders(path);
        current = canonical;
        const parts = pathParts(canonical);
        replace(crumbs, h('ol', {},
          h('li', {}, h('button', {type: 'button', class: 'link', onclick: () => go('/')},
                        'My drive')),
          parts.map((name, i) => h('li', {}, h('button', {
            type: 'button', class: 'link', onclick: () => go(`/${parts.slice(0, i + 1).join('/')}`),
            'aria-current': i === parts.length - 1 ? 'location' : null}, name)))));
        replace(list, folders.length ? folders.map((f) => {
          const target = joinPath(canonical, f.name);
          return h('li', {}, h('button', {type: 'button', class: 'picker-folder',
                                          disabled: blocked(target), onclick: () => go(target)},
            icon(f.virtual ? 'shared' : 'folder'), f.name));
        }) : h('li', {class: 'empty'}, 'No folders here.'));
        here.disabled = canonical === '/Shared with me' ||
          moving.some((p) => parentPath(p).toLowerCase() === canonical.toLowerCase()) ||
          blocked(canonical);
        here.textContent = canonical === '/' ? 'Move to My drive' : `Move to “${baseName(canonical)}”`;
      } catch (err) {
        showError(err);
      } finally {
        list.removeAttribute('aria-busy');
      }
    }

    const form = h('form', {class: 'dialog-form'}, crumbs, list, error,
      h('div', {class: 'dialog-buttons'},
        h('button', {type: 'button', class: 'button', onclick: () => close(null)}, 'Cancel'),
        here));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      here.disabled = true;
      showError(null);
      try {
        close(await onMove(current));
      } catch (err) {
        showError(err);
        here.disabled = false;
      }
    });
    go(start);
    return form;
  }});
}
