// The chat socket of one session: connect, back off and reconnect, resume the run in progress, and send each
// message exactly once.
//
// - Reconnects after any close but 4404 (no such session), with exponential backoff and full jitter; 4401 refreshes
//   the access token first. A ping every 15 s, and a socket silent for 40 s is treated as dead.
// - Every run event has `run_id` and `seq`: the socket remembers the last seq it passed on per run, and drops any
//   frame at or below it, so nothing reaches the view twice. On `ready` it resumes the server's active run (and a
//   run it was following that has ended meanwhile) from that seq: 0 for a run it has not seen, so the view rebuilds
//   the whole run from its events.
// - A message frame carries a `client_id` and stays in the outbox until its `user_message` comes back (or the
//   history shows it). It is sent again after each reconnect; the server starts nothing for an id it has seen.

import { accessToken } from './api.js';
import { uuid } from './util.js';

const PING_EVERY_MS = 15_000;
const SILENT_MS = 40_000;
const MAX_BACKOFF_MS = 15_000;

export class ChatSocket {
  /** `handlers`: onReady(frame), onFrame(frame), onState('connecting'|'open'|'offline'|'gone'), onResumeFailed(run_id). */
  constructor(sessionId, handlers) {
    this.sessionId = sessionId;
    this.handlers = handlers;
    this.ws = null;
    this.ready = false;
    this.closed = false;
    this.attempt = 0;
    this.timer = null;
    this.outbox = [];
    this.lastSeq = new Map(); // run_id -> last seq passed on
    this.openRun = null; // a run seen started and not yet ended
    this.heard = 0;
    this.onOnline = () => this.reconnectSoon();
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  async connect() {
    if (this.closed) return;
    this.handlers.onState?.('connecting');
    let token;
    try {
      token = await accessToken();
    } catch (error) {
      if (error.code === 'signed_out' || error.status === 401) return this.handlers.onState?.('gone');
      return this.scheduleReconnect();
    }
    if (this.closed) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(
      `${scheme}://${location.host}/ws/chat/${encodeURIComponent(this.sessionId)}?token=${encodeURIComponent(token)}`,
    );
    this.ws = ws;
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.heard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.receive(frame);
    };
    ws.onopen = () => {
      this.heard = Date.now();
      this.startHeartbeat(ws);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      this.stopHeartbeat();
      if (this.closed) return;
      if (event.code === 4404) return this.handlers.onState?.('gone');
      this.handlers.onState?.('offline');
      if (event.code === 4401) {
        accessToken({ force: true }).then(
          () => this.scheduleReconnect(),
          () => this.handlers.onState?.('gone'),
        );
        return;
      }
      this.scheduleReconnect();
    };
  }

  receive(frame) {
    if (frame.type === 'ready') {
      this.ready = true;
      this.attempt = 0;
      this.handlers.onState?.('open');
      const active = frame.active_run;
      // A run followed before the drop that is no longer active: fetch the rest of it (its end) first.
      if (this.openRun && this.openRun !== active?.run_id) this.resume(this.openRun);
      if (active) this.resume(active.run_id);
      this.handlers.onReady?.(frame);
      for (const message of this.outbox) this.raw(message);
      return;
    }
    if (frame.run_id && typeof frame.seq === 'number') {
      const last = this.lastSeq.get(frame.run_id) ?? 0;
      if (frame.seq <= last) return; // already passed on
      this.lastSeq.set(frame.run_id, frame.seq);
      if (frame.type === 'user_message') {
        this.openRun = frame.run_id;
        this.acknowledge(frame.message?.client_id);
      }
      if (frame.type === 'assistant_end' && this.openRun === frame.run_id) this.openRun = null;
    } else if (frame.type === 'error' && frame.code === 'resume_unavailable') {
      if (this.openRun === frame.run_id) this.openRun = null;
      this.handlers.onResumeFailed?.(frame.run_id);
      return;
    } else if (frame.type === 'error' && !frame.run_id && this.outbox.length && frame.code !== 'not_found') {
      // An error about a frame comes back in order: a refused message is the oldest one waiting.
      frame = { ...frame, refused: this.outbox.shift() };
    }
    this.handlers.onFrame?.(frame);
  }

  resume(runId) {
    this.raw({ type: 'resume', run_id: runId, after_seq: this.lastSeq.get(runId) ?? 0 });
  }

  /** Queue a user message; it goes now if the socket is ready, else on the next `ready`. Returns its client_id. */
  sendMessage(content, fileIds = [], clientId = uuid()) {
    const frame = { type: 'message', content, client_id: clientId };
    if (fileIds.length) frame.file_ids = fileIds;
    this.outbox.push(frame);
    if (this.ready) this.raw(frame);
    return clientId;
  }

  /** The history shows a message with this client_id: it arrived, stop sending it. */
  acknowledge(clientId) {
    if (!clientId) return false;
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((m) => m.client_id !== clientId);
    return this.outbox.length !== before;
  }

  interrupt() {
    return this.raw({ type: 'interrupt' });
  }

  /** An `edit` or `regenerate` frame, sent now or not at all (false: the socket is not open). Not queued like a
   * message: the view has changed the branch it shows for it, and a late resend would surprise. */
  sendBranch(frame) {
    return this.raw({ ...frame, client_id: uuid() });
  }

  raw(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  startHeartbeat(ws) {
    this.stopHeartbeat();
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.heard > SILENT_MS) {
        ws.close(4000, 'no answer'); // onclose reconnects
        return;
      }
      this.raw({ type: 'ping' });
    }, PING_EVERY_MS);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeat);
  }

  scheduleReconnect() {
    if (this.closed || this.timer) return;
    const ceiling = Math.min(MAX_BACKOFF_MS, 250 * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  reconnectSoon() {
    if (this.ws || this.closed) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.stopHeartbeat();
    window.removeEventListener('online', this.onOnline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, 'bye');
    }
  }
}
