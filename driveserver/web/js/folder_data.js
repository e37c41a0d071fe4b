// A folder's entries, read page by page through the API's cursor, and their sorted view.
// The first page is small so that the listing shows at once; the rest come in large pages in
// the background (a 10,000-entry folder is three more requests), and the view is re-sorted
// as they arrive.

import {api} from './api.js';
import {joinPath} from './format.js';

const FIRST_PAGE = 200;
const NEXT_PAGES = 5000;

/** A stable key for an entry: its file id, or its name for the virtual /Shared with me. */
export function entryKey(entry) {
  return entry.file_id || `virtual:${entry.name}`;
}

/** A name as the server compares names in a folder: in any letter case. */
export function nameKey(name) {
  return name.normalize('NFC').toLowerCase();
}

const COMPARE = {
  name: (a, b) => (a._key < b._key ? -1 : a._key > b._key ? 1 : 0),
  size: (a, b) => (a.size || 0) - (b.size || 0),
  modified: (a, b) => (a.modified_at || 0) - (b.modified_at || 0),
};

/** Folders first, then by `key` in `dir` (1 or -1), ties by name. */
export function sortEntries(entries, {key, dir}) {
  const by = COMPARE[key];
  return [...entries].sort((a, b) => {
    if (a.is_directory !== b.is_directory) return a.is_directory ? -1 : 1;
    return dir * (by(a, b) || COMPARE.name(a, b));
  });
}

/**
 * Load every page of `path`, calling `onPage({path, fileId, entries, done})` after each with
 * all entries so far. Stops (silently) when `signal` aborts; API errors are thrown.
 */
export async function loadFolder(path, signal, onPage) {
  const entries = [];
  let cursor;
  let limit = FIRST_PAGE;
  for (;;) {
    const page = await api.list(path, limit, cursor, signal);
    if (signal.aborted) return;
    for (const entry of page.entries) {
      entry._key = nameKey(entry.name);
      entry.path = joinPath(page.path, entry.name);
      entries.push(entry);
    }
    const done = !page.has_more;
    onPage({path: page.path, fileId: page.file_id, entries, done});
    if (done) return;
    cursor = page.next_cursor;
    limit = NEXT_PAGES;
  }
}
