// The address bar: #/files/<path> (each name percent-encoded), #/trash or #/devices. A hash keeps the
// server out of it (one page at /), and Back and Forward move through folders.

export function folderHash(path) {
  const parts = path.split('/').filter(Boolean).map(encodeURIComponent);
  return `#/files/${parts.join('/')}`;
}

/** {view: 'files', path}, {view: 'trash'} or {view: 'devices'} for the current address. */
export function currentRoute(hash = location.hash) {
  if (hash === '#/trash') return {view: 'trash'};
  if (hash === '#/devices') return {view: 'devices'};
  const rest = hash.startsWith('#/files') ? hash.slice('#/files'.length) : '';
  const names = rest.split('/').filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return {view: 'files', path: `/${names.join('/')}`};
}
