// The sign-in form. The API's message is shown as it is ("wrong email or password"); a 429
// also says when to try again (Retry-After).

import {api} from './api.js';
import {h} from './dom.js';

export function loginView({notice = '', onSignedIn}) {
  const email = h('input', {id: 'login-email', type: 'email', name: 'email', required: true,
                            autocomplete: 'username', autocapitalize: 'none', spellcheck: 'false'});
  const password = h('input', {id: 'login-password', type: 'password', name: 'password',
                               required: true, autocomplete: 'current-password'});
  const error = h('p', {class: 'form-error', role: 'alert', hidden: true});
  const submit = h('button', {type: 'submit', class: 'button primary wide'}, 'Sign in');
  const form = h('form', {class: 'login-form', 'aria-labelledby': 'login-title'},
    h('h1', {id: 'login-title'}, 'Sign in to Drive'),
    notice ? h('p', {class: 'notice', role: 'status'}, notice) : null,
    h('label', {for: 'login-email'}, 'Email'), email,
    h('label', {for: 'login-password'}, 'Password'), password,
    error, submit);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    if (!email.value.trim() || !password.value) {
      error.textContent = 'Enter your email and your password.';
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try {
      const session = await api.login(email.value.trim(), password.value);
      await onSignedIn(session);
    } catch (err) {
      const wait = err.retryAfter ? ` Try again in ${Math.ceil(err.retryAfter)} s.` : '';
      error.textContent = `${err.message}${wait}`;
      error.hidden = false;
      password.select();
      password.focus();
    } finally {
      submit.disabled = false;
      form.removeAttribute('aria-busy');
    }
  });
  queueMicrotask(() => (email.value ? password : email).focus());
  return h('main', {class: 'login', id: 'main'}, form);
}
