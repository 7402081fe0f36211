// One article per message, as the history and the live run both show it. Each renderer returns `{el, set(fields)}`
// so a live message updates in place (an open tool card stays open). Per-message buttons (regenerate, edit,
// versions) go in the `.msg-actions` slot of each article.

import { renderMarkdown } from './markdown.js';
import { formatNumber, h } from './util.js';

const STATUS_LABEL = { streaming: 'Writing…', interrupted: 'Stopped', error: 'Failed', max_turns: 'Turn limit reached' };

function article(role, label) {
  const el = h('article', { class: `msg msg-${role}`, 'data-role': role, 'aria-label': label });
  return el;
}

function setSeq(el, seq) {
  if (seq === null || seq === undefined) el.removeAttribute('data-seq');
  else el.dataset.seq = String(seq);
}

export function userMessage() {
  const el = article('user', 'You');
  const body = h('div', { class: 'msg-text' });
  const status = h('span', { class: 'msg-status' });
  el.append(h('header', { class: 'msg-meta' }, h('span', { class: 'who' }, 'You'), status), body, h('div', { class: 'msg-actions' }));
  let shown = null;
  return {
    el,
    set({ seq, content, pending }) {
      setSeq(el, seq);
      if (content !== shown) body.textContent = shown = content;
      status.textContent = pending ? 'Sending…' : '';
      el.classList.toggle('pending', !!pending);
    },
  };
}

export function assistantMessage() {
  const el = article('assistant', 'Assistant');
  const status = h('span', { class: 'msg-status' });
  const reasoningBody = h('div', { class: 'md reasoning-text' });
  const reasoning = h('details', { class: 'reasoning', hidden: true }, h('summary', {}, 'Reasoning'), reasoningBody);
  const body = h('div', { class: 'md' });
  const usage = h('span', { class: 'usage' });
  el.append(
    h('header', { class: 'msg-meta' }, h('span', { class: 'who' }, 'Assistant'), status),
    reasoning,
    body,
    h('footer', { class: 'msg-foot' }, usage, h('div', { class: 'msg-actions' })),
  );
  let shownText = null;
  let shownReasoning = null;
  return {
    el,
    set({ seq, content, reasoning: thinking, status: state, usage: used }) {
      setSeq(el, seq);
      if (content !== shownText) {
        renderMarkdown(body, content);
        shownText = content;
      }
      if ((thinking || '') !== shownReasoning) {
        shownReasoning = thinking || '';
        reasoning.hidden = !shownReasoning;
        if (shownReasoning) renderMarkdown(reasoningBody, shownReasoning);
      }
      status.textContent = STATUS_LABEL[state] || '';
      el.classList.toggle('streaming', state === 'streaming');
      usage.textContent = used ? `${formatNumber(used.input_tokens)} in · ${formatNumber(used.output_tokens)} out tokens` : '';
    },
  };
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text || '';
  }
}

export function toolMessage() {
  const el = article('tool', 'Tool call');
  const name = h('span', { class: 'tool-name' });
  const server = h('span', { class: 'tool-server' });
  const state = h('span', { class: 'tool-state' });
  const args = h('pre', { class: 'tool-args' });
  const output = h('pre', { class: 'tool-output' });
  const card = h(
    'details',
    { class: 'tool-card', role: 'group' },
    h('summary', {}, name, server, state),
    h('div', { class: 'tool-body' }, h('h3', {}, 'Arguments'), args, h('h3', {}, 'Output'), output),
  );
  el.append(card);
  return {
    el,
    set({ seq, tool }) {
      setSeq(el, seq);
      card.setAttribute('aria-label', tool.name);
      name.textContent = tool.name;
      server.textContent = tool.server ? `on ${tool.server}` : '';
      const done = tool.ok !== null && tool.ok !== undefined;
      state.textContent = !done ? 'running…' : tool.ok ? 'ok' : 'failed';
      state.className = `tool-state ${!done ? 'running' : tool.ok ? 'ok' : 'failed'}`;
      args.textContent = prettyJson(tool.arguments);
      output.textContent = done ? tool.output ?? '' : '…';
    },
  };
}

/** The renderer for a message of the REST history. */
export function forMessage(message) {
  if (message.role === 'user') return userMessage();
  if (message.role === 'tool') return toolMessage();
  return assistantMessage();
}

export function fieldsOf(message, servers) {
  if (message.role === 'tool') {
    const tool = message.tool || { name: 'tool', arguments: '', output: message.content, ok: null };
    return { seq: message.seq, tool: { ...tool, server: servers.get(tool.call_id) } };
  }
  const status = message.role === 'assistant' && message.finish_reason === 'max_turns' ? 'max_turns' : message.status;
  return { seq: message.seq, content: message.content, reasoning: message.reasoning, status, usage: message.usage };
}
