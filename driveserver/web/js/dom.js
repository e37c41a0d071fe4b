// Building DOM nodes without HTML strings: every name and message from the server goes in as
// text, never parsed as markup, so a file called "<img onerror=...>" is just a name.

/**
 * h('button', {type: 'button', onclick: fn, class: 'primary'}, 'Save') -> an element.
 * Attributes named on* become listeners; `class`, `for` and the rest are attributes; boolean
 * true sets an empty attribute and false/null/undefined leaves it out. Children are nodes or
 * strings (as text); arrays are flattened; null and false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' || key === 'checked' || key === 'indeterminate') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An <img> of one of the app's icons (decorative: the text beside it says what it is). */
export function icon(name, label = '') {
  return h('img', {src: new URL(`../icons/${name}.svg`, import.meta.url).href, alt: label,
                   class: 'icon', width: 20, height: 20, 'aria-hidden': label ? null : 'true'});
}
