// A public link opened in a browser (/s/{token}): a password prompt when the link has one, then
// the file (preview and download) or the folder (browse, download each file or all as a zip).
// It uses only the link routes of docs/api.md, with Accept: application/json; the token in the
// address is the credential, and the access token a password buys is kept for this tab only (sessionStorage).

import {errorFrom} from './api.js';
import {AUDIO, IMAGE, TEXT, TEXT_LIMIT, VIDEO} from './kinds.js';
import {h, replace} from './dom.js';
import {formatDate, formatSize} from './format.js';

const root = document.getElementById('app');
const token = decodeURIComponent(location.pathname.split('/')[2] || '');
const base = `/s/${encodeURIComponent(token)}`;
const storeKey = `drive-link-access:${token}`;

function access() {
  return sessionStorage.getItem(storeKey);
}

async function call(method, path, body) {
  const headers = {Accept: 'application/json'};
  if (access()) headers['X-Link-Access'] = access();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {method, headers, credentials: 'omit',
                                  body: body === undefined ? undefined : JSON.stringify(body)});
  if (!resp.ok) throw await errorFrom(resp);
  return resp.json();
}

/** A URL of the file at `path` inside the link, with the access token if one is needed. */
function contentUrl(path, inline = false) {
  const query = new URLSearchParams({path});
  if (inline) query.set('inline', '1');
  if (access()) query.set('access', access());
  return `${base}/content?${query}`;
}

/** A URL of the folder at `path` inside the link as one zip, streamed by the server. */
function zipUrl(path) {
  const query = new URLSearchParams({path});
  if (access()) query.set('access', access());
  return `${base}/zip?${query}`;
}

function currentPath() {
  return new URLSearchParams(location.search).get('path') || '/';
}

function go(path) {
  const query = path === '/' ? '' : `?${new URLSearchParams({path})}`;
  history.pushState(null, '', `${base}${query}`);
  show();
}

function joinPath(folder, name) {
  return folder === '/' ? `/${name}` : `${folder}/${name}`;
}

function page(...children) {
  return replace(root, h('main', {class: 'link-page', id: 'main'}, ...children));
}

function passwordForm(message = '') {
  const input = h('input', {id: 'link-password', type: 'password', required: true,
                            autocomplete: 'current-password'});
  const error = h('p', {class: 'form-error', role: 'alert', hidden: !message}, message);
  const form = h('form', {class: 'link-password'},
    h('h1', {}, 'This link is protected'),
    h('label', {for: 'link-password'}, 'Password'), input, error,
    h('button', {type: 'submit', class: 'button primary'}, 'Open'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const got = await call('POST', `${base}/unlock`, {password: input.value});
      sessionStorage.setItem(storeKey, got.access_token);
      show();
    } catch (err) {
      const wait = err.retryAfter ? ` Try again in ${Math.ceil(err.retryAfter)} s.` : '';
      error.textContent = `${err.message}${wait}`;
      error.hidden = false;
      input.select();
    }
  });
  page(form);
  input.focus();
}

function crumbs(info, path) {
  const parts = path.split('/').filter(Boolean);
  const items = [h('li', {}, h('button', {type: 'button', class: 'link',
                                           'aria-current': parts.length ? null : 'page',
                                           onclick: () => go('/')}, info.rootName))];
  parts.forEach((part, i) => {
    const to = `/${parts.slice(0, i + 1).join('/')}`;
    items.push(h('li', {}, h('button', {type: 'button', class: 'link',
                                         'aria-current': i === parts.length - 1 ? 'page' : null,
                                         onclick: () => go(to)}, part)));
  });
  return h('nav', {class: 'crumbs', 'aria-label': 'Folders'}, h('ol', {}, items));
}

async function preview(name, path, size) {
  const box = h('div', {class: 'link-preview'});
  if (IMAGE.test(name)) box.append(h('img', {src: contentUrl(path, true), alt: name}));
  else if (VIDEO.test(name)) box.append(h('video', {src: contentUrl(path, true), controls: true}));
  else if (AUDIO.test(name)) box.append(h('audio', {src: contentUrl(path, true), controls: true}));
  else if (TEXT.test(name)) {
    const resp = await fetch(contentUrl(path, true), {credentials: 'omit',
      headers: size > TEXT_LIMIT ? {Range: `bytes=0-${TEXT_LIMIT - 1}`} : {}});
    if (resp.ok) box.append(h('pre', {}, await resp.text())); // as text, never as markup
  }
  return box.childElementCount ? box : null;
}

async function showFile(info, path, file) {
  const name = file.name;
  document.title = `${name} – Drive`;
  const download = info.allow_download
    ? h('a', {class: 'button primary', href: contentUrl(path), download: name}, 'Download')
    : h('p', {class: 'hint'}, 'The owner turned off downloads for this link.');
  page(h('header', {}, h('h1', {}, name), download),
       info.is_directory ? crumbs(info, path) : null,
       h('p', {class: 'link-meta'}, `${formatSize(file.size)} · ${formatDate(file.modified_at).text}`),
       info.allow_download ? await preview(name, path, file.size) : null);
}

function showFolder(info, path, entries, more) {
  document.title = `${info.rootName} – Drive`;
  const rows = entries.map((entry) => {
    const to = joinPath(path, entry.name);
    return h('tr', {},
      h('td', {class: 'cell-name'}, h('button', {type: 'button', class: 'link',
        onclick: () => go(to)}, entry.is_directory ? `${entry.name}/` : entry.name)),
      h('td', {}, entry.is_directory ? '' : formatSize(entry.size)),
      h('td', {}, formatDate(entry.modified_at).text));
  });
  const table = h('table', {class: 'listing'},
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Name'), h('th', {scope: 'col'}, 'Size'),
                   h('th', {scope: 'col'}, 'Modified'))),
    h('tbody', {}, rows));
  const status = h('p', {class: 'listing-status', role: 'status'},
                   entries.length ? '' : 'This folder is empty.');
  const moreButton = more ? h('button', {type: 'button', class: 'button', onclick: async () => {
    moreButton.disabled = true;
    try {
      const next = await call('GET', `${base}?${new URLSearchParams({path, cursor: more})}`);
      showFolder(info, path, entries.concat(next.entries), next.has_more ? next.next_cursor : null);
    } catch (err) {
      status.textContent = err.message;
      moreButton.disabled = false;
    }
  }}, 'Show more') : null;
  const zip = info.allow_download && entries.length
    ? h('a', {class: 'button primary', href: zipUrl(path), download: ''}, 'Download all (zip)')
    : null;
  page(h('header', {}, h('h1', {}, info.rootName), zip), crumbs(info, path),
       h('div', {class: 'table-wrap'}, table), status, moreButton);
}

async function show() {
  const path = currentPath();
  try {
    const top = await call('GET', base);
    const info = {...top, rootName: top.name};
    if (!top.is_directory) return await showFile(info, '/', top);
    const here = path === '/' ? top : await call('GET', `${base}?${new URLSearchParams({path})}`);
    if (here.is_directory) return showFolder(info, path, here.entries, here.has_more ? here.next_cursor : null);
    return await showFile(info, path, here);
  } catch (err) {
    if (err.code === 'password_required') {
      const expired = access() !== null;
      sessionStorage.removeItem(storeKey);
      return passwordForm(expired ? 'Your access ran out; enter the password again.' : '');
    }
    const what = err.status === 404 ? 'This link does not exist, or it was revoked.'
      : err.status === 410 ? 'This link has expired.' : err.message;
    return page(h('h1', {}, 'Nothing to show'), h('p', {class: 'form-error', role: 'alert'}, what));
  }
}

window.addEventListener('popstate', show);
show();
