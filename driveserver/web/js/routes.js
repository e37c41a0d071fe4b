// The address bar: #/files/<path> (each name percent-encoded), #/search/<text>, #/trash or
// #/devices. A hash keeps the
// server out of it (one page at /), and Back and Forward move through folders.

export function folderHash(path) {
  const parts = path.split('/').filter(Boolean).map(encodeURIComponent);
  return `#/files/${parts.join('/')}`;
}

/** {view: 'files', path}, {view: 'search', q}, {view: 'trash'} or {view: 'devices'}. */
export function searchHash(q) {
  return `#/search/${encodeURIComponent(q)}`;
}

export function currentRoute(hash = location.hash) {
  if (hash === '#/trash') return {view: 'trash'};
  if (hash.startsWith('#/search/')) {
    try {
      return {view: 'search', q: decodeURIComponent(hash.slice('#/search/'.length))};
    } catch {
      return {view: 'search', q: hash.slice('#/search/'.length)};
    }
  }
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
