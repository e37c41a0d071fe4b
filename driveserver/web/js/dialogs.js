// Modal dialogs on <dialog>: a name to type, a yes/no, a password change. Each returns a
// promise; the work a dialog starts runs while it is open, so an error from the API is shown
// inside it, beside the fields, and the user can correct and try again.

import {h} from './dom.js';

/**
 * Open a modal <dialog> holding `content` (a <form> or nodes) and resolve with what `close`
 * was called with. Escape, or the Cancel button, resolves null. Focus returns to where it was.
 */
let dialogs = 0;

export function openDialog({title, build, className = ''}) {
  const returnFocus = document.activeElement;
  const titleId = `dialog-title-${++dialogs}`;
  const dialog = h('dialog', {class: `dialog ${className}`, 'aria-labelledby': titleId});
  return new Promise((resolve) => {
    let result = null;
    const close = (value) => {
      result = value;
      dialog.close();
    };
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (returnFocus && returnFocus.isConnected) returnFocus.focus();
      resolve(result);
    });
    dialog.append(h('h2', {id: titleId}, title), build(close));
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** An error paragraph inside a dialog: empty and hidden until `show(err)`. */
function errorLine() {
  const el = h('p', {class: 'dialog-error', role: 'alert', hidden: true});
  return {
    el,
    show(err) {
      el.textContent = err ? (err.message || String(err)) : '';
      el.hidden = !err;
    },
  };
}

/** Buttons at the foot of a dialog's form: Cancel and the submit button. */
function footer(close, submitLabel, danger = false) {
  return h('div', {class: 'dialog-buttons'},
    h('button', {type: 'button', class: 'button', onclick: () => close(null)}, 'Cancel'),
    h('button', {type: 'submit', class: danger ? 'button danger' : 'button primary'},
      submitLabel));
}

/** Run `work` for a form's submit: fields and buttons off while it runs, errors shown. */
function submitting(form, error, work) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const controls = [...form.querySelectorAll('button, input')];
    controls.forEach((c) => { c.disabled = true; });
    form.setAttribute('aria-busy', 'true');
    error.show(null);
    try {
      await work();
    } catch (err) {
      error.show(err);
      controls.forEach((c) => { c.disabled = false; });
      const first = form.querySelector('input');
      if (first) first.focus();
    } finally {
      form.removeAttribute('aria-busy');
    }
  });
}

/** A name the server will accept: not empty, no "/", not "." or "..". */
export function nameProblem(name) {
  if (!name.trim()) return 'The name cannot be empty.';
  if (name.includes('/')) return 'A name cannot contain "/".';
  if (name === '.' || name === '..') return 'This name is reserved.';
  return null;
}

/**
 * Ask for a name; `onSubmit(name)` runs while the dialog is open (its error is shown there).
 * Resolves with onSubmit's result, or null when cancelled.
 */
export function askName({title, label, value = '', submit, onSubmit}) {
  return openDialog({title, build: (close) => {
    const input = h('input', {id: 'dialog-name', name: 'name', type: 'text', required: true,
                              autocomplete: 'off', spellcheck: 'false', value});
    const error = errorLine();
    const form = h('form', {class: 'dialog-form', novalidate: true},
      h('label', {for: 'dialog-name'}, label), input, error.el, footer(close, submit));
    submitting(form, error, async () => {
      const name = input.value;
      const problem = nameProblem(name);
      if (problem) throw new Error(problem);
      close(await onSubmit(name));
    });
    queueMicrotask(() => {
      input.focus();
      const dot = value.lastIndexOf('.');
      input.setSelectionRange(0, dot > 0 ? dot : value.length); // the name, not its extension
    });
    return form;
  }});
}

/** A question with one action; resolves true when it ran (`onConfirm` errors shown inside). */
export function confirmAction({title, message, confirm, danger = true, onConfirm}) {
  return openDialog({title, build: (close) => {
    const error = errorLine();
    const form = h('form', {class: 'dialog-form'}, h('p', {}, message), error.el,
                   footer(close, confirm, danger));
    submitting(form, error, async () => {
      await onConfirm();
      close(true);
    });
    queueMicrotask(() => form.querySelector('button[type=submit]').focus());
    return form;
  }});
}

/**
 * A question with several answers: `choices` is [{value, label, primary?}]; resolves with the
 * chosen value, or null (Cancel, Escape).
 */
export function choose({title, message, choices}) {
  return openDialog({title, build: (close) => {
    const buttons = choices.map((c) => h('button', {
      type: 'button', class: c.primary ? 'button primary' : 'button',
      onclick: () => close(c.value)}, c.label));
    queueMicrotask(() => (buttons.find((b) => b.classList.contains('primary')) || buttons[0]).focus());
    return h('div', {class: 'dialog-form'}, message,
      h('div', {class: 'dialog-buttons'},
        h('button', {type: 'button', class: 'button', onclick: () => close(null)}, 'Cancel'),
        buttons));
  }});
}

/** Change the password. Every session ends with it (this one too): resolves true when done. */
export function changePasswordDialog(changePassword) {
  return openDialog({title: 'Change password', build: (close) => {
    const field = (id, label, autocomplete) => [
      h('label', {for: id}, label),
      h('input', {id, type: 'password', required: true, autocomplete}),
    ];
    const error = errorLine();
    const form = h('form', {class: 'dialog-form', novalidate: true},
      field('old-password', 'Current password', 'current-password'),
      field('new-password', 'New password (at least 8 characters)', 'new-password'),
      field('confirm-password', 'New password again', 'new-password'),
      h('p', {class: 'hint'}, 'You will be signed out everywhere, here too.'),
      error.el, footer(close, 'Change password'));
    submitting(form, error, async () => {
      const value = (id) => form.querySelector(`#${id}`).value;
      if (value('new-password') !== value('confirm-password')) {
        throw new Error('The two new passwords differ.');
      }
      await changePassword(value('old-password'), value('new-password'));
      close(true);
    });
    queueMicrotask(() => form.querySelector('input').focus());
    return form;
  }});
}
