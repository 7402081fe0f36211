// The buttons of a message of the history, in its `.msg-actions` slot: Regenerate (an answer), Edit (a question,
// with an inline editor), and Previous version / Next version where the message has siblings (`sibling_seqs`).
// The view gives the handlers; this module only builds the DOM (text nodes, never HTML).

import { h } from './util.js';

/** Fill `slot` for `message`. `handlers`: regenerate(userSeq), edit(seq, content), version(seq). */
export function renderActions(slot, message, handlers) {
  const parts = [];
  const siblings = message.sibling_seqs || [];
  if (siblings.length > 1) parts.push(versions(message, siblings, handlers));
  if (message.role === 'assistant' && message.parent_seq && message.status !== 'streaming') {
    parts.push(button('Regenerate', 'Answer the question again', () => handlers.regenerate(message)));
  }
  if (message.role === 'user') {
    parts.push(button('Edit', 'Edit this message and send it again', () => openEditor(slot, message, handlers)));
  }
  slot.replaceChildren(...parts);
}

function button(label, title, onclick) {
  return h('button', { type: 'button', class: 'small', title, onclick }, label);
}

function versions(message, siblings, handlers) {
  const index = siblings.indexOf(message.seq);
  const previous = h('button', { type: 'button', class: 'icon small', 'aria-label': 'Previous version', title: 'Previous version' }, '‹');
  const next = h('button', { type: 'button', class: 'icon small', 'aria-label': 'Next version', title: 'Next version' }, '›');
  previous.disabled = index <= 0;
  next.disabled = index < 0 || index >= siblings.length - 1;
  previous.addEventListener('click', () => handlers.version(siblings[index - 1]));
  next.addEventListener('click', () => handlers.version(siblings[index + 1]));
  const where = h('span', { class: 'version-count' }, `${index + 1} / ${siblings.length}`);
  return h('span', { class: 'versions', role: 'group', 'aria-label': 'Versions' }, previous, where, next);
}

function openEditor(slot, message, handlers) {
  const article = slot.closest('article');
  const text = article.querySelector('.msg-text');
  if (article.querySelector('.msg-editor')) return;
  const box = h('textarea', { 'aria-label': 'Edit message', rows: 3 });
  box.value = message.content;
  const send = h('button', { type: 'submit' }, 'Send edit');
  const cancel = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  const form = h('form', { class: 'msg-editor' }, box, h('div', { class: 'msg-editor-row' }, cancel, send));
  const close = () => {
    form.remove();
    text.hidden = false;
    slot.hidden = false;
  };
  cancel.addEventListener('click', close);
  box.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.stopPropagation();
      close();
    } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!box.value.trim()) return;
    if (handlers.edit(message, box.value)) close();
  });
  text.hidden = true;
  slot.hidden = true;
  text.after(form);
  box.focus();
}
