// The client's entry point: load the server's config, sign in if needed, then the sidebar and the chat, with
// the address bar as the router (`/` a new chat, `/s/{id}` a session).

import * as api from './api.js';
import { state } from './store.js';
import { h } from './util.js';
import { renderAuth } from './view-auth.js';
import { openChat, renderChat, showError } from './view-chat.js';
import { renderSidebar } from './view-sidebar.js';

const root = document.getElementById('app');

function route({ focusSeq = null } = {}) {
  const match = location.pathname.match(/^\/s\/([^/]+)$/);
  openChat(match ? decodeURIComponent(match[1]) : null, { focusSeq });
}

function navigate(path, { focusSeq = null } = {}) {
  if (location.pathname !== path) history.pushState(null, '', path);
  document.querySelector('.layout')?.classList.remove('show-side');
  document.querySelector('.chat-head .menu')?.setAttribute('aria-expanded', 'false');
  route({ focusSeq });
}

async function signOut() {
  await api.signOut();
  location.assign('/');
}

function main() {
  const sidebar = h('aside', { class: 'sidebar', id: 'sidebar' });
  const chat = h('main', { class: 'chat' });
  const layout = h('div', { class: 'layout' }, sidebar, chat);
  root.replaceChildren(layout);
  renderChat(chat, { toggleSidebar: () => layout.classList.toggle('show-side') });
  renderSidebar(sidebar, { navigate, showError, onSignOut: signOut });
  window.addEventListener('popstate', () => route());
  route();
}

async function boot() {
  try {
    state.config = await api.getConfig();
  } catch {
    root.replaceChildren(h('p', { role: 'alert', class: 'alert boot' }, 'The chinwag server cannot be reached. Reload the page to try again.'));
    return;
  }
  api.onSignedOut(() => location.assign('/'));
  state.user = api.currentUser();
  if (state.user) main();
  else
    renderAuth(root, {
      config: state.config,
      onSignedIn: (user) => {
        state.user = user;
        main();
      },
    });
}

boot();
