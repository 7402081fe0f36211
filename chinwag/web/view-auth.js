// Sign in and create account: one form, two buttons. Registration refusals show the server's own words.

import * as api from './api.js';
import { h } from './util.js';

export function renderAuth(root, { config, onSignedIn }) {
  const email = h('input', { id: 'email', type: 'email', name: 'email', autocomplete: 'username', required: true, maxlength: 320 });
  const password = h('input', {
    id: 'password',
    type: 'password',
    name: 'password',
    autocomplete: 'current-password',
    required: true,
    minlength: 8,
    maxlength: 1024,
  });
  const alertSlot = h('div', { class: 'alert-slot' });
  const signIn = h('button', { type: 'submit' }, 'Sign in');
  const create = h('button', { type: 'button', class: 'secondary' }, 'Create account');
  const hint =
    config?.registration === 'first_user'
      ? 'The first account created on this server becomes its administrator.'
      : config?.registration === 'closed'
        ? 'New accounts are created by the administrator.'
        : null;

  const form = h(
    'form',
    { class: 'auth-card', 'aria-labelledby': 'auth-title', novalidate: true },
    h('h1', { id: 'auth-title' }, h('img', { src: iconUrl(), alt: '', class: 'logo' }), 'chinwag'),
    h('p', { class: 'muted' }, 'Sign in to chat, or create an account.'),
    h('label', { for: 'email' }, 'Email'),
    email,
    h('label', { for: 'password' }, 'Password'),
    password,
    alertSlot,
    h('div', { class: 'auth-buttons' }, signIn, create),
    hint ? h('p', { class: 'muted small' }, hint) : null,
  );

  const busy = (on) => {
    signIn.disabled = create.disabled = on;
  };
  const fail = (message) => alertSlot.replaceChildren(h('div', { role: 'alert', class: 'alert' }, message));

  async function attempt(action) {
    alertSlot.replaceChildren();
    if (!email.value.trim() || !password.value) return fail('Enter your email and password.');
    if (action === 'register' && password.value.length < 8) return fail('Choose a password of at least 8 characters.');
    busy(true);
    try {
      const user = action === 'register' ? await api.register(email.value.trim(), password.value) : await api.signIn(email.value.trim(), password.value);
      onSignedIn(user);
    } catch (error) {
      busy(false);
      if (error.code === 'invalid_credentials') fail('That email and password do not match an account.');
      else if (error.status === 429) fail('Too many attempts: wait a minute, then try again.');
      else fail(error.detail || 'Something went wrong. Try again.');
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    attempt('login');
  });
  create.addEventListener('click', () => attempt('register'));
  root.replaceChildren(h('main', { class: 'auth' }, form));
  email.focus();
}

function iconUrl() {
  return new URL('./icon.svg', import.meta.url).pathname;
}
