// The sessions sidebar: New chat, the search box and its hits, the chats (pinned first, then most recent; more
// load as the list scrolls), each with rename, pin and delete; the signed-in user and Sign out.

import * as api from './api.js';
import { ask } from './dialog.js';
import { emit, on, removeSession, state, upsertSession } from './store.js';
import { debounce, h, icon, sessionTitle } from './util.js';

export function renderSidebar(root, { navigate, showError, onSignOut }) {
  const list = h('ul', { class: 'chat-list' });
  const sentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  const nav = h('nav', { 'aria-label': 'Chats', class: 'chats' }, list, sentinel);
  const searchBox = h('input', { type: 'search', 'aria-label': 'Search chats', placeholder: 'Search chats', maxlength: 1000 });
  const hits = h('section', { 'aria-label': 'Search results', class: 'hits', hidden: true });
  const newChat = h('button', { type: 'button', class: 'new-chat' }, 'New chat');
  newChat.addEventListener('click', () => navigate('/'));
  const signOut = h('button', { type: 'button', class: 'secondary' }, 'Sign out');
  signOut.addEventListener('click', onSignOut);

  root.replaceChildren(
    h('div', { class: 'side-top' }, h('span', { class: 'brand' }, 'chinwag'), newChat),
    h('div', { class: 'side-search' }, searchBox),
    hits,
    nav,
    h('div', { class: 'side-bottom' }, h('span', { class: 'who-am-i', title: state.user?.email }, state.user?.email), signOut),
  );

  function item(session) {
    const title = sessionTitle(session);
    const current = state.chat?.sessionId === session.id;
    const link = h('a', { href: `/s/${session.id}`, class: 'chat-link', 'aria-current': current ? 'page' : null }, title);
    link.addEventListener('click', (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      navigate(`/s/${session.id}`);
    });
    const rename = h('button', { type: 'button', class: 'icon', 'aria-label': `Rename ${title}`, title: 'Rename' }, icon('pencil'));
    rename.addEventListener('click', async () => {
      const value = await ask({ title: 'Rename chat', confirm: 'Rename', input: { label: 'Title', value: session.title } });
      if (value === null || !value.trim()) return;
      try {
        upsertSession(await api.updateSession(session.id, { title: value.trim() }));
      } catch (error) {
        showError(error.detail);
      }
    });
    const pin = h(
      'button',
      { type: 'button', class: 'icon', 'aria-label': `${session.pinned ? 'Unpin' : 'Pin'} ${title}`, 'aria-pressed': String(session.pinned), title: session.pinned ? 'Unpin' : 'Pin' },
      icon('star', { filled: session.pinned }),
    );
    pin.addEventListener('click', async () => {
      try {
        upsertSession(await api.updateSession(session.id, { pinned: !session.pinned }));
      } catch (error) {
        showError(error.detail);
      }
    });
    const del = h('button', { type: 'button', class: 'icon', 'aria-label': `Delete ${title}`, title: 'Delete' }, icon('trash'));
    del.addEventListener('click', async () => {
      const ok = await ask({ title: 'Delete chat?', message: `“${title}”, its messages and its files will be gone for good.`, confirm: 'Delete' });
      if (!ok) return;
      try {
        await api.deleteSession(session.id);
        removeSession(session.id);
        if (state.chat?.sessionId === session.id) navigate('/');
      } catch (error) {
        showError(error.detail);
      }
    });
    return h(
      'li',
      { class: `chat-item${current ? ' current' : ''}${session.pinned ? ' pinned' : ''}` },
      link,
      h('span', { class: 'chat-tools' }, rename, pin, del),
    );
  }

  function render() {
    list.replaceChildren(...state.sessions.map(item));
    if (!state.sessions.length && state.sessionsDone) list.append(h('li', { class: 'muted empty' }, 'No chats yet.'));
  }

  let loading = false;
  async function loadMore() {
    if (loading || state.sessionsDone) return;
    loading = true;
    try {
      const page = await api.listSessions(state.sessionsCursor);
      for (const s of page.items) if (!state.sessions.some((x) => x.id === s.id)) state.sessions.push(s);
      state.sessionsCursor = page.next_cursor;
      state.sessionsDone = !page.next_cursor;
      emit('sessions');
    } catch (error) {
      showError(error.detail);
    } finally {
      loading = false;
    }
    if (!state.sessionsDone && visible(sentinel, nav)) loadMore();
  }
  new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && loadMore(), { root: nav }).observe(sentinel);

  const runSearch = debounce(async (q) => {
    if (!q.trim()) {
      hits.hidden = true;
      nav.hidden = false;
      return;
    }
    try {
      const found = await api.search(q);
      if (searchBox.value !== q) return;
      hits.replaceChildren(
        h('h2', { class: 'small muted' }, found.items.length ? `${found.items.length} found` : 'Nothing found'),
        h(
          'ul',
          {},
          found.items.map((hit) => {
            const session = state.sessions.find((s) => s.id === hit.session_id);
            const open = h(
              'button',
              { type: 'button', class: 'hit' },
              h('span', { class: 'hit-title' }, sessionTitle(session)),
              h('span', { class: 'hit-snippet' }, hit.snippet),
            );
            open.addEventListener('click', () => navigate(`/s/${hit.session_id}`, { focusSeq: hit.seq }));
            return h('li', {}, open);
          }),
        ),
      );
      hits.hidden = false;
      nav.hidden = true;
    } catch (error) {
      showError(error.detail);
    }
  }, 250);
  searchBox.addEventListener('input', () => runSearch(searchBox.value));
  searchBox.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      searchBox.value = '';
      runSearch('');
    }
  });

  on('sessions', render);
  render();
  loadMore();
}

function visible(el, root) {
  const a = el.getBoundingClientRect();
  const b = root.getBoundingClientRect();
  return a.top < b.bottom && a.bottom >= b.top;
}
