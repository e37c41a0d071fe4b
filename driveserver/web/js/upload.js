// Uploads through the API's three steps (docs/api.md "Upload in three steps"):
//
//   1. hash the file in 4 MiB blocks (SHA-256 of each, as driveproto/blocks.py does), reading
//      one File.slice at a time, so a 2 GiB file never sits in memory;
//   2. upload-init with those hashes: the server answers which blocks it lacks;
//   3. PUT only those blocks to block_url, then complete with the ordered list (a receipt for
//      each block sent, the hash for each the server already had).
//
// Without WebCrypto (a page served over plain http from another host is not a "secure
// context"), the file is streamed whole to upload_url instead, where the server cuts it.
// XMLHttpRequest rather than fetch: it reports upload progress.

import {ApiError, api, networkError} from './api.js';
import {h} from './dom.js';
import {formatSize, joinPath} from './format.js';

export const BLOCK_SIZE = 4 * 1024 * 1024;
const RETRIES = 3;

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The path and query of a URL the API handed out: the page talks to its own origin only. */
function sameOrigin(url) {
  const u = new URL(url, location.href);
  return u.pathname + u.search;
}

/** Send `body` with XHR; resolves with the JSON answer, reports bytes sent to `onProgress`. */
function send(method, url, body, onProgress, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, sameOrigin(url));
    xhr.responseType = 'text';
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: a proxy's error page
      }
      if (xhr.status >= 200 && xhr.status < 300 && data) resolve(data);
      else {
        const err = (data && data.error) || {};
        reject(new ApiError(xhr.status, err.code || 'http_error',
                            err.message || `${xhr.status} ${xhr.statusText}`, err));
      }
    };
    xhr.onerror = () => reject(networkError());
    xhr.onabort = () => reject(new DOMException('cancelled', 'AbortError'));
    signal.addEventListener('abort', () => xhr.abort(), {once: true});
    xhr.send(body);
  });
}

/** A network failure or a 5xx is worth another try (after 1 s, 2 s, 4 s); a 4xx is not. */
async function withRetries(fn, signal) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const transient = err instanceof ApiError && (err.status === 0 || err.status >= 500);
      if (!transient || attempt >= RETRIES || signal.aborted) throw err;
      await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** attempt));
    }
  }
}

/** The blocks of `file`: [{order, hash, size}], one 4 MiB slice in memory at a time. */
export async function hashBlocks(file, onProgress, signal) {
  const blocks = [];
  for (let offset = 0; offset < file.size; offset += BLOCK_SIZE) {
    if (signal.aborted) throw new DOMException('cancelled', 'AbortError');
    const data = await file.slice(offset, offset + BLOCK_SIZE).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', data);
    blocks.push({order: blocks.length, hash: hex(digest), size: data.byteLength});
    onProgress(offset + data.byteLength);
  }
  return blocks;
}

/**
 * Upload `file` as `path`. `progress(phase, done, total)` follows it: phase "hashing" (bytes
 * read of the file), then "sending" (bytes of the blocks the server lacked), then "done".
 * `resume` ({} the first time, the same object again on a retry) keeps the hashes, the grant
 * and the receipts of the blocks that went through, so a retry after a network drop sends only
 * the blocks still missing, under the same grant (valid for hours; docs/api.md).
 */
export async function uploadFile(file, path, progress, signal, resume = {}) {
  if (!(globalThis.crypto && crypto.subtle)) return uploadWhole(file, path, progress, signal);
  if (!resume.init) {
    resume.blocks = await hashBlocks(file, (n) => progress('hashing', n, file.size), signal);
    resume.init = await api.uploadInit({path, size: file.size, blocks: resume.blocks});
    resume.receipts = new Map();
  }
  const {blocks, init, receipts} = resume;
  const missing = new Set(init.blocks_to_upload || []);
  const seen = new Set();
  const toSend = blocks.filter((b) => missing.has(b.hash) && !seen.has(b.hash) && seen.add(b.hash));
  const total = toSend.reduce((n, b) => n + b.size, 0);
  let sent = toSend.filter((b) => receipts.has(b.hash)).reduce((n, b) => n + b.size, 0);
  for (const block of toSend.filter((b) => !receipts.has(b.hash))) {
    progress('sending', sent, total);
    const start = block.order * BLOCK_SIZE;
    const url = init.block_url.replace('{hash}', block.hash);
    const receipt = await withRetries(() => send('PUT', url, file.slice(start, start + block.size),
      (n) => progress('sending', sent + Math.min(n, block.size), total), signal), signal);
    receipts.set(block.hash, receipt);
    sent += block.size;
  }
  const done = await api.complete(init.file_id,
                                  {blocks: blocks.map((b) => receipts.get(b.hash) || b.hash)});
  progress('done', total, total);
  return done;
}

async function uploadWhole(file, path, progress, signal) {
  const init = await api.uploadInit({path, size: file.size});
  const stored = await send('POST', init.upload_url, file,
                            (n) => progress('sending', n, file.size), signal);
  const done = await api.complete(init.file_id, {blocks: stored.blocks});
  progress('done', file.size, file.size);
  return done;
}

/** A new AbortController for `item`, and the button that aborts it. */
function cancelButton(item) {
  item.controller = new AbortController();
  item.cancel = h('button', {type: 'button', class: 'button small',
                             'aria-label': `Cancel upload of ${item.name}`,
                             onclick: () => item.controller.abort()}, 'Cancel');
  return item.cancel;
}

/** Files sent at once: enough to hide each file's round trips, few enough to share the link. */
const PARALLEL = 3;
// Lines in the panel, so that a dropped tree of 10,000 files is not 10,000 lines: the next
// SHOW_WAITING files to go (the others are a count), the last KEEP_DONE that went through
// (the summary counts them all); running and failed files always have theirs.
const SHOW_WAITING = 20;
const KEEP_DONE = 100;

/**
 * The upload panel: an overall bar (bytes done of all queued), then one line per file with its
 * progress bar, state and any error. Files wait in a queue and PARALLEL of them go at a time;
 * a file's bytes are read only when its turn comes (one 4 MiB slice at a time).
 */
export class Uploads {
  constructor({onUploaded}) {
    this.onUploaded = onUploaded;
    this.queue = [];
    this.next = 0; // index in queue of the first item not started
    this.active = 0;
    this.totalBytes = 0;
    this.doneBytes = 0;
    this.doneCount = 0; // counts, so that a progress event costs the same with 10,000 queued
    this.failedCount = 0;
    this.listed = 0; // queue[0..listed) have had their line put in the list
    this.doneLines = []; // lines of files that went through, oldest first
    this.more = h('p', {class: 'upload-more', hidden: true});
    this.list = h('ul', {class: 'upload-list'});
    this.summary = h('p', {class: 'upload-summary', role: 'status'});
    this.overall = h('progress', {max: 1, value: 0, 'aria-label': 'All uploads'});
    this.overallText = h('span', {class: 'upload-overall-text'});
    this.el = h('section', {class: 'uploads', 'aria-labelledby': 'uploads-title', hidden: true},
      h('div', {class: 'uploads-head'}, h('h2', {id: 'uploads-title'}, 'Uploads'),
        h('button', {type: 'button', class: 'button', onclick: () => this.clearFinished()},
          'Clear finished')),
      this.summary, h('div', {class: 'upload-overall'}, this.overall, this.overallText),
      this.list, this.more);
  }

  /** Queue `items` ([{file, name}]) for `folder` (the one open when they were chosen); a name
   * may be a relative path ("photos/2024/a.jpg"): upload-init creates the folders on the way. */
  add(items, folder) {
    for (const {file, name} of items) {
      const bar = h('progress', {max: 1, value: 0, 'aria-label': `Upload of ${name}`});
      const state = h('span', {class: 'upload-state'}, 'Waiting');
      const error = h('p', {class: 'upload-error', role: 'alert', hidden: true});
      const item = {file, name, folder, bar, state, error, done: false, sentBytes: 0, resume: {}};
      item.li = h('li', {class: 'upload'},
        h('div', {class: 'upload-line'}, h('span', {class: 'upload-name'}, name),
          h('span', {class: 'upload-size'}, formatSize(file.size)), state, cancelButton(item)),
        bar, error);
      this.queue.push(item);
      this.totalBytes += file.size;

    }
    this.el.hidden = false;
    this.updateSummary();
    this.run();
  }

  run() {
    while (this.active < PARALLEL && this.next < this.queue.length) {
      const item = this.queue[this.next++];
      item.started = true;
      this.active++;
      this.one(item).finally(() => {
        this.active--;
        this.run();
      });
    }
    this.showLines();
  }

  /** List the lines of the files up to SHOW_WAITING past the running ones; count the rest. */
  showLines() {
    const upTo = Math.min(this.queue.length, this.next + SHOW_WAITING);
    for (; this.listed < upTo; this.listed++) this.list.append(this.queue[this.listed].li);
    const rest = this.queue.length - this.listed;
    this.more.hidden = rest === 0;
    this.more.textContent = `and ${rest.toLocaleString('en')} more waiting`;
  }

  /** `item` has `fraction` (0..1) of its work behind it: move the overall bar to match. */
  advance(item, fraction) {
    const bytes = fraction * item.file.size;
    this.doneBytes += bytes - item.sentBytes;
    item.sentBytes = bytes;
    this.showOverall();
  }

  showOverall() {
    const finished = this.doneCount === this.queue.length;
    this.overall.value = this.totalBytes ? this.doneBytes / this.totalBytes : (finished ? 1 : 0);
    this.overallText.textContent = `${formatSize(Math.round(this.doneBytes))} of ` +
      formatSize(this.totalBytes);
  }

  async one(item) {
    const {file, bar, state, error, controller} = item;
    state.textContent = 'Starting';
    try {
      // The bar's first half is the hashing (reading the file), its second the sending.
      await uploadFile(file, joinPath(item.folder, item.name), (phase, done, total) => {
        const part = total ? done / total : 1;
        const value = phase === 'hashing' ? part / 2 : phase === 'sending' ? 0.5 + part / 2 : 1;
        bar.value = value;
        this.advance(item, value);
        const pct = `${Math.floor(100 * value)} %`;
        state.textContent = phase === 'hashing' ? `Checking ${pct}` : phase === 'sending'
          ? `Sending ${pct}` : '100 %';
      }, controller.signal, item.resume);
      state.textContent = 'Done';
      item.li.classList.add('finished');
      this.doneLines.push(item.li);
      if (this.doneLines.length > KEEP_DONE) this.doneLines.shift().remove();
      this.onUploaded(item.folder);
    } catch (err) {
      const cancelled = err.name === 'AbortError';
      state.textContent = cancelled ? 'Cancelled' : 'Failed';
      item.li.classList.add(cancelled ? 'cancelled' : 'failed');
      if (!cancelled) {
        this.failedCount++;
        error.textContent = err.message || String(err);
        error.hidden = false;
        // The network or the server (5xx): the grant holds, a retry goes on where it stopped.
        // Refused (4xx): the next try starts over (the grant may be what was refused).
        if (!(err.status === 0 || err.status >= 500)) item.resume = {};
        item.retry = h('button', {type: 'button', class: 'button small',
                                  'aria-label': `Retry upload of ${item.name}`,
                                  onclick: () => this.retry(item)}, 'Retry');
        state.after(item.retry);
      }
    } finally {
      item.done = true;
      this.doneCount++;
      item.cancel.remove();
      this.advance(item, 1); // a failed or cancelled file is behind us too
      this.updateSummary();
    }
  }

  /** Run a failed `item` again now (beside the queue's PARALLEL: a person asked for it). */
  retry(item) {
    item.retry.remove();
    item.done = false;
    this.doneCount--;
    this.failedCount--;
    this.doneBytes -= item.sentBytes;
    item.sentBytes = 0;
    item.li.classList.remove('failed');
    item.error.hidden = true;
    item.state.after(cancelButton(item));
    this.updateSummary();
    this.active++;
    this.one(item).finally(() => {
      this.active--;
      this.run();
    });
  }

  updateSummary() {
    this.summary.textContent = `${this.doneCount} of ${this.queue.length} done` +
      (this.failedCount ? `, ${this.failedCount} failed` : '');
  }

  clearFinished() {
    for (const item of this.queue.filter((i) => i.done)) {
      item.li.remove();
      this.totalBytes -= item.file.size;
      this.doneBytes -= item.sentBytes;
    }
    this.queue = this.queue.filter((i) => !i.done);
    this.next = this.queue.filter((i) => i.started).length;
    this.listed = this.queue.filter((i) => i.li.isConnected).length; // still a prefix
    this.doneLines = [];
    this.showLines();
    this.doneCount = 0;
    this.failedCount = 0;
    this.el.hidden = this.queue.length === 0;
    this.updateSummary();
    this.showOverall();
  }
}
