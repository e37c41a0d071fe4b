// How one entry of a folder looks: a row of the list view or a tile of the grid view. Both
// carry data-index (the entry's place in the sorted view), aria-selected and a roving tabindex,
// which listing.js reads back for clicks, selection and the keyboard.

import {contentUrl, thumbnailUrl} from './api.js';
import {h, icon, replace} from './dom.js';
import {formatDate, formatSize} from './format.js';
import {IMAGE} from './kinds.js';
import {folderHash} from './routes.js';
import {sharedLabel} from './share_dialog.js';

const THUMB_PX = 256;

/** The owner's mark on an item shared with people or by link ("Shared with 1 person, 1 link"). */
function sharedBadge(shared) {
  const label = sharedLabel(shared);
  return label ? h('span', {class: 'badge shared-badge', role: 'img', 'aria-label': label,
                            title: label}, icon('shared')) : null;
}

export function entryRow(entry, index, selected, focused) {
  const date = formatDate(entry.modified_at);
  const link = entry.is_directory
    ? h('a', {href: folderHash(entry.path), tabindex: -1}, entry.name)
    : h('a', {href: contentUrl(entry.file_id), download: entry.name, tabindex: -1}, entry.name);
  return h('tr', {tabindex: focused ? 0 : -1, 'aria-selected': String(selected),
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

/** A tile of the grid view: a thumbnail for an image, else the item's icon; then its name. */
export function entryTile(entry, index, selected, focused) {
  const link = entry.is_directory
    ? h('a', {href: folderHash(entry.path), tabindex: -1}, entry.name)
    : h('a', {href: contentUrl(entry.file_id), download: entry.name, tabindex: -1}, entry.name);
  const kind = entry.virtual || entry.permission ? 'shared' : entry.is_directory ? 'folder'
    : entry.symlink ? 'link' : 'file';
  const picture = h('div', {class: 'thumb'});
  if (!entry.is_directory && !entry.symlink && entry.file_id && entry.size > 0 &&
      IMAGE.test(entry.name)) {
    // Decorative (the name is beside it); lazy, so only tiles on screen ask the server.
    picture.append(h('img', {src: thumbnailUrl(entry.file_id, entry.version, THUMB_PX),
                             alt: '', loading: 'lazy', decoding: 'async',
                             onerror: () => replace(picture, icon(kind))}));
  } else {
    picture.append(icon(kind));
  }
  return h('div', {role: 'gridcell', class: 'tile', tabindex: focused ? 0 : -1,
                   'aria-selected': String(selected), dataset: {index}},
    h('input', {type: 'checkbox', tabindex: -1, checked: selected, disabled: !entry.file_id,
                'aria-label': `Select ${entry.name}`}),
    picture,
    h('div', {class: 'tile-name'}, link, sharedBadge(entry.shared)),
    h('div', {class: 'tile-meta'}, entry.is_directory ? 'Folder' : formatSize(entry.size),
      entry.permission ? h('span', {class: 'badge'}, entry.permission === 'edit'
        ? 'can edit' : 'view only') : null));
}
