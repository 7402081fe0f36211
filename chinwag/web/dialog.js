// A modal question (confirm, or one text field), built on <dialog>: focus stays inside, Escape cancels.

import { h } from './util.js';

/** Resolves the text entered (or true for a confirm), or null when cancelled. */
export function ask({ title, message, confirm, input }) {
  return new Promise((resolve) => {
    const field = input ? h('input', { type: 'text', 'aria-label': input.label, value: input.value ?? '', maxlength: 500 }) : null;
    const dialog = h(
      'dialog',
      { class: 'ask', 'aria-label': title },
      h(
        'form',
        { method: 'dialog' },
        h('h2', {}, title),
        message ? h('p', {}, message) : null,
        field,
        h(
          'div',
          { class: 'ask-buttons' },
          h('button', { type: 'submit', value: 'cancel', class: 'secondary' }, 'Cancel'),
          h('button', { type: 'submit', value: 'ok', class: confirm === 'Delete' ? 'danger' : '' }, confirm),
        ),
      ),
    );
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      dialog.remove();
      resolve(ok ? (field ? field.value : true) : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    (field || dialog.querySelector('button[value=ok]')).focus();
  });
}
