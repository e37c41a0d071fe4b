// A file shown in the page without downloading it: images, audio, video and PDF as themselves,
// text and code as text. The server chooses what may be shown inline and how (content?inline=1:
// HTML and SVG only ever as text/plain, under a sandbox CSP), so nothing a user uploaded runs
// as a page of this origin; here the kind only picks the element.

import {contentUrl} from './api.js';
import {openDialog} from './dialogs.js';
import {h} from './dom.js';
import {formatSize} from './format.js';
import {AUDIO, IMAGE, PDF, TEXT, TEXT_LIMIT, VIDEO} from './kinds.js';


/** Whether the page can show this entry (a file of a kind it previews). */
export function canPreview(entry) {
  return Boolean(entry && !entry.is_directory && !entry.symlink
    && [IMAGE, VIDEO, AUDIO, PDF, TEXT].some((kind) => kind.test(entry.name)));
}

function inlineUrl(entry) {
  return `${contentUrl(entry.file_id)}?inline=1`;
}

async function textOf(entry) {
  const resp = await fetch(inlineUrl(entry), {credentials: 'same-origin', headers:
    entry.size > TEXT_LIMIT ? {Range: `bytes=0-${TEXT_LIMIT - 1}`} : {}});
  if (!resp.ok) throw new Error(`The file could not be read (${resp.status}).`);
  return resp.text();
}

export function showPreview(entry) {
  return openDialog({title: entry.name, className: 'wide preview', build: (close) => {
    const box = h('div', {class: 'preview-box'});
    const url = inlineUrl(entry);
    if (IMAGE.test(entry.name)) box.append(h('img', {src: url, alt: entry.name}));
    else if (VIDEO.test(entry.name)) box.append(h('video', {src: url, controls: true}));
    else if (AUDIO.test(entry.name)) box.append(h('audio', {src: url, controls: true}));
    else if (PDF.test(entry.name)) {
      box.append(h('iframe', {src: url, title: entry.name, class: 'preview-pdf'}));
    } else {
      const pre = h('pre', {class: 'preview-text'}, 'Loading…');
      box.append(pre);
      textOf(entry).then((text) => {
        pre.textContent = text; // as text, never as markup
      }, (err) => {
        pre.textContent = err.message;
      });
    }
    return h('div', {class: 'dialog-form'}, box,
      h('p', {class: 'hint'}, formatSize(entry.size)),
      h('div', {class: 'dialog-buttons'},
        h('a', {class: 'button', href: contentUrl(entry.file_id), download: entry.name},
          'Download'),
        h('button', {type: 'button', class: 'button', onclick: () => close(null)}, 'Close')));
  }});
}
