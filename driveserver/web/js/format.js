// What a person reads: sizes in kB/MB/GB, dates relative to today, and paths.

const UNITS = ['bytes', 'kB', 'MB', 'GB', 'TB', 'PB'];

/** 0 -> "0 bytes", 1 -> "1 byte", 1234567 -> "1.2 MB" (powers of 1000, as disks are sold). */
export function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return '';
  if (bytes === 1) return '1 byte';
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${Number(value.toFixed(digits)).toLocaleString()} ${UNITS[unit]}`;
}

const TIME = new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit'});
const DAY = new Intl.DateTimeFormat(undefined, {day: 'numeric', month: 'short'});
const FULL_DAY = new Intl.DateTimeFormat(undefined, {day: 'numeric', month: 'short', year: 'numeric'});
const FULL = new Intl.DateTimeFormat(undefined, {dateStyle: 'full', timeStyle: 'medium'});

/** A Unix time (seconds) -> {text: "14:05" | "3 Mar" | "3 Mar 2021", full, iso}. */
export function formatDate(seconds, now = new Date()) {
  if (seconds === null || seconds === undefined) return {text: '', full: '', iso: ''};
  const date = new Date(seconds * 1000);
  const sameDay = date.toDateString() === now.toDateString();
  const text = sameDay ? TIME.format(date)
    : date.getFullYear() === now.getFullYear() ? DAY.format(date) : FULL_DAY.format(date);
  return {text, full: FULL.format(date), iso: date.toISOString()};
}

/** An ISO 8601 time (the trash's trashed_at may be either) or Unix seconds -> formatDate. */
export function formatAnyDate(value) {
  if (typeof value === 'number') return formatDate(value);
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? {text: String(value), full: '', iso: ''} : formatDate(ms / 1000);
}

/** "/" + "a" -> "/a"; "/a" + "b" -> "/a/b". */
export function joinPath(folder, name) {
  return folder === '/' ? `/${name}` : `${folder}/${name}`;
}

/** "/a/b" -> "/a"; "/a" -> "/". */
export function parentPath(path) {
  const cut = path.lastIndexOf('/');
  return cut <= 0 ? '/' : path.slice(0, cut);
}

/** "/a/b" -> ["a", "b"]; "/" -> []. */
export function pathParts(path) {
  return path.split('/').filter(Boolean);
}

/** The last name of a path ("/" -> ""). */
export function baseName(path) {
  const parts = pathParts(path);
  return parts.length ? parts[parts.length - 1] : '';
}

/** Whether `path` is `folder` or lies inside it, in any letter case (as the server sees it). */
export function isWithin(path, folder) {
  const p = path.toLowerCase();
  const f = folder.toLowerCase();
  return p === f || f === '/' || p.startsWith(`${f}/`);
}
