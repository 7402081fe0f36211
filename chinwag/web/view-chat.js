// The conversation: history by pages (older on scroll-up, with no jump), the live run rebuilt from its events,
// the composer (Enter sends, Shift+Enter breaks the line, Escape stops), model picker, context gauge and errors.
//
// How a run is shown without a gap or a double: the socket passes each run event once, in order (see socket.js).
// A run the view follows from its first event lives in `chat.runs` and is drawn from those events only; history
// rows with its `run_id` (the server's checkpoints of the streaming answer) are hidden meanwhile. When it ends,
// its persisted rows are fetched and replace it. A page opened mid-run resumes the run from seq 0, so the whole
// answer so far is rebuilt from events, then continues live.

import * as api from './api.js';
import { assistantMessage, fieldsOf, forMessage, toolMessage, userMessage } from './messages.js';
import { ChatSocket } from './socket.js';
import { emit, newChat, newRun, on, state, upsertSession } from './store.js';
import { formatNumber, frameThrottle, h, icon, sessionTitle } from './util.js';
import { renderFiles, addFiles, resetFiles } from './view-files.js';
import { askSettings } from './view-settings.js';

const PAGE = 50;
let socket = null;
let view = null; // the DOM of the chat pane, built once

export function currentSocket() {
  return socket;
}

// --- opening a conversation ---------------------------------------------------------------------------------------

export async function openChat(sessionId, { focusSeq = null } = {}) {
  if (socket) socket.close();
  socket = null;
  state.chat = newChat(sessionId);
  state.chat.focusSeq = focusSeq;
  resetFiles();
  view.clear();
  emit('chat', 'run', 'error', 'files', 'sessions');
  if (!sessionId) {
    view.composer.focus();
    return;
  }
  const chat = state.chat;
  connect(chat); // at once: a message typed before the session's details arrive waits in the socket's outbox
  try {
    chat.session = await api.getSession(sessionId);
  } catch (error) {
    if (state.chat !== chat) return;
    chat.error = { message: error.status === 404 ? 'This chat does not exist (or was deleted).' : error.detail };
    chat.sessionId = null;
    socket?.close();
    socket = null;
    emit('error', 'chat');
    return;
  }
  if (state.chat !== chat) return;
  upsertSession(chat.session);
  emit('chat');
  loadFiles(chat);
  view.composer.focus();
}

function connect(chat) {
  let first = true;
  socket = new ChatSocket(chat.sessionId, {
    onState: (net) => {
      chat.net = net;
      if (net === 'gone' && !api.currentUser()) return;
      emit('net');
    },
    onReady: async (frame) => {
      const active = frame.active_run;
      if (active && !chat.runs.has(active.run_id)) chat.runs.set(active.run_id, newRun(active.run_id));
      const wasFirst = first;
      first = false;
      try {
        if (wasFirst) await loadInitial(chat);
        else await catchUp(chat);
      } catch (error) {
        showError(error.detail);
      }
    },
    onFrame: (frame) => onFrame(chat, frame),
    onResumeFailed: async (runId) => {
      chat.runs.delete(runId);
      await loadNewest(chat);
    },
  });
}

async function loadInitial(chat) {
  if (chat.focusSeq) {
    const page = await api.messages(chat.sessionId, { before: chat.focusSeq + Math.floor(PAGE / 2) + 1, limit: PAGE });
    if (state.chat !== chat) return;
    setPage(chat, page.items, { hasOlder: page.has_more });
    const last = page.items.at(-1)?.seq ?? 0;
    const session = chat.session ?? (await api.getSession(chat.sessionId)); // seqs run 1..message_count
    chat.hasNewer = last < session.message_count;
    emit('chat');
  } else {
    await loadNewest(chat);
  }
}

async function loadNewest(chat) {
  const page = await api.messages(chat.sessionId, { limit: PAGE });
  if (state.chat !== chat) return;
  chat.messages.clear();
  chat.hasNewer = false;
  setPage(chat, page.items, { hasOlder: page.has_more });
  view.stickToBottom = true;
  emit('chat');
}

function setPage(chat, items, { hasOlder }) {
  for (const m of items) chat.messages.set(m.seq, m);
  chat.hasOlder = hasOlder;
  acknowledgeFrom(chat, items);
  emit('chat', 'run');
}

/** After a reconnect: the messages written meanwhile (by other tabs, or runs that ended while offline). */
async function catchUp(chat) {
  if (chat.hasNewer) return;
  const last = Math.max(0, ...chat.messages.keys());
  const page = await api.messages(chat.sessionId, { after: last, limit: 100 });
  if (state.chat !== chat) return;
  if (page.has_more) return loadNewest(chat);
  for (const m of page.items) chat.messages.set(m.seq, m);
  acknowledgeFrom(chat, page.items);
  emit('chat', 'run');
}

function acknowledgeFrom(chat, items) {
  for (const m of items) {
    if (m.role !== 'user' || !m.client_id) continue;
    socket?.acknowledge(m.client_id);
    chat.pending = chat.pending.filter((p) => p.client_id !== m.client_id);
  }
}

async function loadOlder(chat) {
  if (chat.loadingOlder || !chat.hasOlder || !chat.sessionId) return;
  const first = Math.min(...chat.messages.keys());
  if (!Number.isFinite(first)) return;
  chat.loadingOlder = true;
  try {
    const page = await api.messages(chat.sessionId, { before: first, limit: PAGE });
    if (state.chat !== chat) return;
    view.keepAnchor();
    for (const m of page.items) chat.messages.set(m.seq, m);
    chat.hasOlder = page.has_more;
    emit('chat');
  } catch (error) {
    showError(error.detail);
  } finally {
    chat.loadingOlder = false;
  }
}

async function loadNewer(chat) {
  if (chat.loadingNewer || !chat.hasNewer) return;
  chat.loadingNewer = true;
  try {
    const last = Math.max(...chat.messages.keys());
    const page = await api.messages(chat.sessionId, { after: last, limit: PAGE });
    if (state.chat !== chat) return;
    for (const m of page.items) chat.messages.set(m.seq, m);
    chat.hasNewer = page.has_more;
    emit('chat');
  } catch (error) {
    showError(error.detail);
  } finally {
    chat.loadingNewer = false;
  }
}

async function loadFiles(chat) {
  try {
    const files = await api.listFiles(chat.sessionId);
    if (state.chat !== chat) return;
    chat.files = files.items;
    emit('files');
  } catch (error) {
    showError(error.detail);
  }
}

// --- run events ---------------------------------------------------------------------------------------------------

const renderLive = frameThrottle(() => emit('run'));

function onFrame(chat, frame) {
  if (state.chat !== chat) return;
  if (frame.type === 'session_updated') {
    upsertSession(frame.session);
    emit('chat');
    return;
  }
  if (frame.type === 'pong') return;
  if (frame.type === 'error' && !frame.seq) {
    if (frame.refused) {
      const refused = frame.refused;
      chat.pending = chat.pending.filter((p) => p.client_id !== refused.client_id);
      chat.error = {
        message: frame.message,
        retry: frame.retryable ? () => send(refused.content, refused.file_ids || []) : null,
      };
    } else if (frame.code !== 'not_found') {
      chat.error = { message: frame.message };
    }
    emit('error', 'run');
    return;
  }
  let run = chat.runs.get(frame.run_id);
  if (!run) {
    if (frame.type !== 'user_message') return; // a run this page does not follow from its start
    run = newRun(frame.run_id);
    chat.runs.set(frame.run_id, run);
  }
  switch (frame.type) {
    case 'user_message':
      run.user = frame.message;
      chat.pending = chat.pending.filter((p) => p.client_id !== frame.message.client_id);
      chat.error = null;
      if (chat.hasNewer) loadNewest(chat);
      view.stickToBottom = true;
      emit('error');
      break;
    case 'assistant_start':
      run.assistantId = frame.message_id;
      break;
    case 'text_delta':
      run.text += frame.delta;
      break;
    case 'reasoning_delta':
      run.reasoning += frame.delta;
      break;
    case 'tool_start':
      if (!run.tools.some((t) => t.call_id === frame.call_id)) {
        run.tools.push({ call_id: frame.call_id, name: frame.name, arguments: frame.arguments, server: frame.server, output: null, ok: null, order: null });
        if (frame.server) view.servers.set(frame.call_id, frame.server);
      }
      break;
    case 'tool_done': {
      const tool = run.tools.find((t) => t.call_id === frame.call_id);
      if (tool) Object.assign(tool, { output: frame.output, ok: frame.ok, order: ++run.doneCount });
      break;
    }
    case 'error':
      run.error = frame.message;
      chat.error = {
        message: frame.message,
        retry: frame.retryable && run.user ? () => send(run.user.content, []) : null,
      };
      emit('error');
      break;
    case 'assistant_end':
      run.ended = true;
      run.finish_reason = frame.finish_reason;
      run.usage = frame.usage;
      if (chat.session) chat.session = { ...chat.session, context: frame.context };
      finishRun(chat, run);
      break;
    default:
      return;
  }
  if (frame.type === 'text_delta' || frame.type === 'reasoning_delta') renderLive();
  else emit('run');
}

/** A run ended: its rows are in the history now (persisted before `assistant_end`); show them instead. */
async function finishRun(chat, run) {
  emit('run', 'chat');
  try {
    if (run.user) {
      const page = await api.messages(chat.sessionId, { after: run.user.seq - 1, limit: 100 });
      if (state.chat !== chat) return;
      for (const m of page.items) chat.messages.set(m.seq, m);
      acknowledgeFrom(chat, page.items);
      chat.runs.delete(run.run_id);
    } else {
      chat.runs.delete(run.run_id);
      await loadNewest(chat);
    }
    emit('chat', 'run');
    const session = await api.getSession(chat.sessionId);
    if (state.chat === chat) upsertSession(session);
    emit('chat');
  } catch (error) {
    showError(error.detail);
  }
}

// --- sending ------------------------------------------------------------------------------------------------------

async function ensureSession() {
  const chat = state.chat;
  if (chat.sessionId) return chat.sessionId;
  if (!chat.creating) {
    chat.creating = (async () => {
      const body = chat.draftModel ? { model: chat.draftModel } : {};
      if (chat.draftSettings) body.settings = chat.draftSettings;
      const session = await api.createSession(body);
      chat.sessionId = session.id;
      chat.session = session;
      history.replaceState(null, '', `/s/${session.id}`);
      upsertSession(session);
      connect(chat);
      emit('chat');
      return session.id;
    })();
  }
  return chat.creating;
}
export { ensureSession };

function send(content, fileIds) {
  const chat = state.chat;
  if (!content.trim()) return;
  chat.error = null;
  const clientId = socket.sendMessage(content, fileIds);
  chat.pending.push({ client_id: clientId, content });
  view.stickToBottom = true;
  emit('run', 'error');
}

async function submit() {
  const chat = state.chat;
  const content = view.composer.value;
  if (!content.trim() || isRunning(chat) || chat.attachments.some((a) => !a.uploaded)) return;
  const max = state.config?.limits?.max_message_chars;
  if (max && content.length > max) return showError(`The message is longer than ${formatNumber(max)} characters.`);
  try {
    await ensureSession();
  } catch (error) {
    return showError(error.detail);
  }
  const fileIds = chat.attachments.map((a) => a.uploaded.id);
  chat.attachments = [];
  view.composer.value = '';
  view.autosize();
  emit('files');
  send(content, fileIds);
}

function isRunning(chat) {
  return [...chat.runs.values()].some((r) => !r.ended) || chat.pending.length > 0;
}

function interrupt() {
  if (socket && [...state.chat.runs.values()].some((r) => !r.ended)) socket.interrupt();
}

export function showError(message) {
  if (!state.chat) return;
  state.chat.error = { message: message || 'Something went wrong.' };
  emit('error');
}

// --- the view -----------------------------------------------------------------------------------------------------

export function renderChat(root, { toggleSidebar }) {
  const menu = h('button', { type: 'button', class: 'icon menu', 'aria-label': 'Show chats', 'aria-expanded': 'false', 'aria-controls': 'sidebar' }, icon('menu'));
  menu.addEventListener('click', () => menu.setAttribute('aria-expanded', String(toggleSidebar())));
  const title = h('h1', { class: 'chat-title' });
  const model = h('select', { 'aria-label': 'Model', class: 'model' });
  const settingsButton = h('button', { type: 'button', class: 'icon settings', 'aria-label': 'Model settings', title: 'Model settings' }, icon('settings'));
  const contextText = h('span', { class: 'ctx-text' });
  const meter = h('meter', { min: 0, max: 1, value: 0, 'aria-hidden': 'true' });
  const context = h('p', { role: 'status', 'aria-label': 'Context', class: 'ctx', title: 'Tokens the model sees next turn / its context window' }, meter, contextText);
  const net = h('span', { class: 'net', 'aria-live': 'polite' });
  const filesSlot = h('div', { class: 'files-slot' });
  const topSentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  const bottomSentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  const list = h('div', { class: 'messages' });
  const empty = h('div', { class: 'empty-chat' }, h('p', {}, 'Ask anything. Attach files with the button or by dropping them here.'));
  const conversation = h('section', { 'aria-label': 'Conversation', class: 'conversation', tabindex: '0' }, topSentinel, empty, list, bottomSentinel);
  const alertSlot = h('div', { class: 'alert-slot' });
  const composer = h('textarea', { 'aria-label': 'Message', rows: 1, placeholder: 'Message chinwag', title: 'Enter sends, Shift+Enter starts a new line, Escape stops an answer' });
  const attachmentsSlot = h('div', { class: 'attachments' });
  const fileInput = h('input', { type: 'file', multiple: true, hidden: true, tabindex: '-1' });
  const attach = h('button', { type: 'button', class: 'icon attach', 'aria-label': 'Attach file', title: 'Attach file' }, icon('attach'));
  const sendButton = h('button', { type: 'submit', class: 'send' }, 'Send');
  const stopButton = h('button', { type: 'button', class: 'stop danger' }, 'Stop');
  const actions = h('div', { class: 'composer-actions' }, attach, fileInput, sendButton);
  const form = h('form', { class: 'composer' }, attachmentsSlot, h('div', { class: 'composer-row' }, composer, actions));

  root.replaceChildren(
    h('header', { class: 'chat-head' }, menu, title, net, h('span', { class: 'spacer' }), model, settingsButton, context),
    filesSlot,
    conversation,
    alertSlot,
    form,
  );

  // --- composer
  const autosize = () => {
    composer.style.height = 'auto';
    composer.style.height = `${Math.min(composer.scrollHeight, 240)}px`;
  };
  composer.addEventListener('input', autosize);
  composer.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  stopButton.addEventListener('click', interrupt);
  document.addEventListener('keydown', (event) => {
    // Escape stops the answer, unless it is closing a dialog or clearing the search box.
    if (event.key === 'Escape' && !document.querySelector('dialog[open]') && !event.target.closest?.('.sidebar')) interrupt();
  });
  attach.addEventListener('click', () => fileInput.click());
  fileInput.addEventListener('change', () => {
    addFiles([...fileInput.files]);
    fileInput.value = '';
  });
  root.addEventListener('dragover', (event) => {
    if ([...(event.dataTransfer?.types || [])].includes('Files')) {
      event.preventDefault();
      root.classList.add('dropping');
    }
  });
  root.addEventListener('dragleave', (event) => {
    if (event.target === root || !root.contains(event.relatedTarget)) root.classList.remove('dropping');
  });
  root.addEventListener('drop', (event) => {
    event.preventDefault();
    root.classList.remove('dropping');
    if (event.dataTransfer?.files?.length) addFiles([...event.dataTransfer.files]);
  });

  settingsButton.addEventListener('click', async () => {
    const chat = state.chat;
    const chosen = await askSettings(chat.session?.settings || chat.draftSettings || {});
    if (!chosen || state.chat !== chat) return;
    if (!chat.sessionId) {
      chat.draftSettings = chosen;
      return;
    }
    try {
      upsertSession(await api.updateSession(chat.sessionId, { settings: chosen }));
      emit('chat');
    } catch (error) {
      showError(error.detail);
    }
  });

  model.addEventListener('change', async () => {
    const chat = state.chat;
    if (!chat.sessionId) {
      chat.draftModel = model.value;
      return;
    }
    try {
      upsertSession(await api.updateSession(chat.sessionId, { model: model.value }));
      emit('chat');
    } catch (error) {
      showError(error.detail);
      emit('chat');
    }
  });

  // --- rendering
  const rows = new Map(); // seq -> {message, view}
  const runViews = new Map(); // run_id -> {user, assistant, tools: Map(call_id -> view)}
  const pendingViews = new Map(); // client_id -> view
  let anchor = null;

  view = {
    composer,
    servers: new Map(), // call_id -> MCP server name (tool_start has it, the history does not)
    stickToBottom: true,
    autosize,
    clear() {
      rows.clear();
      runViews.clear();
      pendingViews.clear();
      list.replaceChildren();
      this.stickToBottom = true;
      composer.value = '';
      autosize();
    },
    keepAnchor() {
      const first = list.querySelector('article');
      anchor = first ? { el: first, top: first.getBoundingClientRect().top } : null;
    },
  };

  function historyNodes(chat) {
    const seqs = [...chat.messages.keys()].sort((a, b) => a - b);
    const nodes = [];
    const keep = new Set();
    for (const seq of seqs) {
      const message = chat.messages.get(seq);
      if (message.run_id && chat.runs.has(message.run_id)) continue;
      let row = rows.get(seq);
      if (!row || row.message !== message) {
        const v = row && row.message.role === message.role ? row.view : forMessage(message);
        v.set(fieldsOf(message, view.servers));
        row = { message, view: v };
        rows.set(seq, row);
      }
      keep.add(seq);
      nodes.push(row.view.el);
    }
    for (const seq of [...rows.keys()]) if (!keep.has(seq)) rows.delete(seq);
    return nodes;
  }

  function runNodes(chat) {
    const nodes = [];
    const runs = [...chat.runs.values()].sort((a, b) => (a.user?.seq ?? Infinity) - (b.user?.seq ?? Infinity));
    for (const run of runs) {
      let v = runViews.get(run.run_id);
      if (!v) {
        v = { user: userMessage(), assistant: assistantMessage(), tools: new Map() };
        runViews.set(run.run_id, v);
      }
      if (!run.user) continue; // resumed: the events up to user_message are on their way
      const base = run.user.seq;
      v.user.set({ seq: base, content: run.user.content });
      nodes.push(v.user.el);
      if (run.assistantId) {
        const status = !run.ended ? 'streaming' : run.finish_reason === 'stop' ? 'complete' : run.finish_reason;
        v.assistant.set({ seq: base + 1, content: run.text, reasoning: run.reasoning, status, usage: run.usage });
        nodes.push(v.assistant.el);
      }
      const done = run.tools.filter((t) => t.order !== null).sort((a, b) => a.order - b.order);
      const open = run.tools.filter((t) => t.order === null);
      for (const [i, tool] of [...done, ...open].entries()) {
        let tv = v.tools.get(tool.call_id);
        if (!tv) v.tools.set(tool.call_id, (tv = toolMessage()));
        tv.set({ seq: tool.order === null ? null : base + 1 + i + 1, tool });
        nodes.push(tv.el);
      }
    }
    for (const id of [...runViews.keys()]) if (!chat.runs.has(id)) runViews.delete(id);
    return nodes;
  }

  function pendingNodes(chat) {
    const nodes = [];
    for (const p of chat.pending) {
      let v = pendingViews.get(p.client_id);
      if (!v) {
        v = userMessage();
        v.set({ seq: null, content: p.content, pending: true });
        pendingViews.set(p.client_id, v);
      }
      nodes.push(v.el);
    }
    for (const id of [...pendingViews.keys()]) if (!chat.pending.some((p) => p.client_id === id)) pendingViews.delete(id);
    return nodes;
  }

  function renderMessages() {
    const chat = state.chat;
    if (!chat) return;
    const atBottom = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 60;
    const nodes = [...historyNodes(chat), ...runNodes(chat), ...pendingNodes(chat)];
    // Reorder in place: existing elements move only when they must (an open tool card stays open).
    const wanted = new Set(nodes);
    for (const child of [...list.children]) if (!wanted.has(child)) child.remove();
    nodes.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
    });
    empty.hidden = nodes.length > 0 || !!chat.sessionId;
    if (anchor && anchor.el.isConnected) {
      conversation.scrollTop += anchor.el.getBoundingClientRect().top - anchor.top;
    } else if (chat.focusSeq && rows.has(chat.focusSeq)) {
      const target = rows.get(chat.focusSeq).view.el;
      target.classList.add('hit');
      target.setAttribute('tabindex', '-1');
      target.scrollIntoView({ block: 'center' });
      target.focus({ preventScroll: true });
      chat.focusSeq = null;
      view.stickToBottom = false;
    } else if (view.stickToBottom || atBottom) {
      conversation.scrollTop = conversation.scrollHeight;
      view.stickToBottom = false;
    }
    anchor = null;
    const running = isRunning(chat);
    const streaming = [...chat.runs.values()].some((r) => !r.ended);
    if (streaming && sendButton.isConnected) sendButton.replaceWith(stopButton);
    if (!streaming && stopButton.isConnected) stopButton.replaceWith(sendButton);
    sendButton.disabled = running || chat.attachments.some((a) => !a.uploaded);
    queueMicrotask(loadMoreIfVisible);
  }

  function loadMoreIfVisible() {
    const chat = state.chat;
    if (!chat?.sessionId) return;
    const box = conversation.getBoundingClientRect();
    if (chat.hasOlder && topSentinel.getBoundingClientRect().bottom >= box.top - 200) loadOlder(chat);
    if (chat.hasNewer && bottomSentinel.getBoundingClientRect().top <= box.bottom + 200) loadNewer(chat);
  }
  conversation.addEventListener('scroll', loadMoreIfVisible, { passive: true });

  function renderHead() {
    const chat = state.chat;
    const session = chat?.session;
    title.textContent = session ? sessionTitle(session) : 'New chat';
    document.title = session ? `${sessionTitle(session)} · chinwag` : 'chinwag';
    const models = state.config?.models || [];
    const current = session?.model || chat?.draftModel || models.find((m) => m.default)?.id;
    if (model.options.length !== models.length) {
      model.replaceChildren(...models.map((m) => h('option', { value: m.id }, m.id)));
    }
    if (current) model.value = current;
    const limit = session?.context?.limit || models.find((m) => m.id === current)?.context_window || 0;
    const tokens = session?.context?.tokens || 0;
    contextText.textContent = `${formatNumber(tokens)} / ${formatNumber(limit)} tokens`;
    meter.value = limit ? Math.min(1, tokens / limit) : 0;
  }

  function renderNet() {
    const chat = state.chat;
    const word = { connecting: chat?.sessionId ? 'Connecting…' : '', offline: 'Reconnecting…', gone: 'Disconnected' };
    net.textContent = chat ? word[chat.net] || '' : '';
  }

  function renderError() {
    const error = state.chat?.error;
    if (!error) return alertSlot.replaceChildren();
    const retry = error.retry ? h('button', { type: 'button' }, 'Retry') : null;
    retry?.addEventListener('click', () => {
      state.chat.error = null;
      emit('error');
      error.retry();
    });
    const dismiss = h('button', { type: 'button', class: 'icon', 'aria-label': 'Dismiss error' }, icon('close'));
    dismiss.addEventListener('click', () => {
      state.chat.error = null;
      emit('error');
    });
    alertSlot.replaceChildren(h('div', { role: 'alert', class: 'alert' }, h('span', { class: 'alert-text' }, error.message), retry, dismiss));
  }

  on('chat', () => {
    renderHead();
    renderMessages();
  });
  on('sessions', renderHead);
  on('run', renderMessages);
  on('error', renderError);
  on('net', renderNet);
  on('files', renderMessages);
  renderFiles({ attachmentsSlot, filesSlot });
}
