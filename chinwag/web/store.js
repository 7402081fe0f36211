// The one state of the client. Views read it and re-render the parts named by a change's topic:
// 'user', 'sessions', 'chat' (the session open and its history), 'run' (the live run), 'files', 'error', 'net'.

export const state = {
  config: null,
  user: null,
  sessions: [], // sorted: pinned first, then most recently active
  sessionsCursor: null,
  sessionsDone: false,
  chat: null, // see newChat()
};

/** The state of one open conversation (or of the empty page before its first message: `sessionId` null). */
export function newChat(sessionId) {
  return {
    sessionId,
    session: null,
    messages: new Map(), // seq -> Message, from REST (and the persisted rows of finished runs)
    hasOlder: false,
    hasNewer: false,
    loadingOlder: false,
    focusSeq: null, // a search hit to scroll to
    runs: new Map(), // run_id -> the runs followed from their first event, rebuilt from events: see newRun()
    pending: [], // messages sent and not yet acknowledged: {client_id, content}
    attachments: [], // {key, file (the browser's), progress, uploaded (File) | null, error, preview}
    files: [],
    error: null, // {message, retry?: () => void}
    expected: null, // an edit or regenerate sent, its run not seen yet: {kind, user?}
    net: 'connecting',
  };
}

export function newRun(runId) {
  return {
    run_id: runId,
    user: null, // the persisted user Message
    assistantId: null,
    text: '',
    reasoning: '',
    tools: [], // {call_id, name, arguments, server, output, ok, done, order}
    doneCount: 0,
    ended: false,
    finish_reason: null,
    usage: null,
    error: null,
    regenerated: false, // a new answer to `user`, which the history shows already
  };
}

const listeners = new Map();

export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(fn);
  return () => listeners.get(topic).delete(fn);
}

export function emit(...topics) {
  for (const topic of topics) for (const fn of listeners.get(topic) || []) fn();
}

/** Keep the sidebar's order: pinned first, then updated_at, then id (as the server pages them). */
export function upsertSession(session) {
  const list = state.sessions.filter((s) => s.id !== session.id);
  list.push(session);
  list.sort((a, b) => {
    if (a.pinned !== b.pinned) return a.pinned ? -1 : 1;
    if (a.updated_at !== b.updated_at) return a.updated_at < b.updated_at ? 1 : -1;
    return a.id < b.id ? 1 : -1;
  });
  state.sessions = list;
  if (state.chat?.sessionId === session.id) state.chat.session = session;
  emit('sessions');
}

export function removeSession(id) {
  state.sessions = state.sessions.filter((s) => s.id !== id);
  emit('sessions');
}
