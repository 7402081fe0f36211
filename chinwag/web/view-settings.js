// The model settings of a chat (temperature, top_p, max_output_tokens, reasoning_effort) in a <dialog>. An empty
// field means "the provider's default": it is sent as null, which the server drops from the stored settings.

import { h } from './util.js';

const EFFORTS = ['minimal', 'low', 'medium', 'high'];

function numberField(label, name, { min, max, step, value }) {
  const input = h('input', { type: 'number', name, 'aria-label': label, min, max, step, placeholder: 'default' });
  if (value !== null && value !== undefined) input.value = String(value);
  return h('label', { class: 'setting' }, h('span', {}, label), input);
}

/** Resolves the settings to send (each key null or a value), or null when cancelled. */
export function askSettings(current = {}) {
  return new Promise((resolve) => {
    const effort = h(
      'select',
      { name: 'reasoning_effort', 'aria-label': 'Reasoning effort' },
      h('option', { value: '' }, 'default'),
      ...EFFORTS.map((e) => h('option', { value: e }, e)),
    );
    effort.value = current.reasoning_effort || '';
    const error = h('p', { class: 'setting-error', role: 'alert', hidden: true });
    const form = h(
      'form',
      { method: 'dialog', novalidate: true },
      h('h2', {}, 'Model settings'),
      h('p', { class: 'hint' }, 'Leave a field empty for the provider\u2019s default. They apply from the next answer on.'),
      numberField('Temperature', 'temperature', { min: 0, max: 2, step: 0.1, value: current.temperature }),
      numberField('Top P', 'top_p', { min: 0, max: 1, step: 0.05, value: current.top_p }),
      numberField('Max output tokens', 'max_output_tokens', { min: 1, step: 1, value: current.max_output_tokens }),
      h('label', { class: 'setting' }, h('span', {}, 'Reasoning effort'), effort),
      error,
      h(
        'div',
        { class: 'ask-buttons' },
        h('button', { type: 'submit', value: 'cancel', class: 'secondary', formnovalidate: true }, 'Cancel'),
        h('button', { type: 'submit', value: 'ok' }, 'Save settings'),
      ),
    );
    const dialog = h('dialog', { class: 'ask settings', 'aria-label': 'Model settings' }, form);
    const read = () => {
      const value = (name) => form.elements[name].value.trim();
      const number = (name, integer) => {
        const text = value(name);
        if (!text) return null;
        const parsed = Number(text);
        return Number.isFinite(parsed) && (!integer || Number.isInteger(parsed)) ? parsed : NaN;
      };
      return {
        temperature: number('temperature'),
        top_p: number('top_p'),
        max_output_tokens: number('max_output_tokens', true),
        reasoning_effort: value('reasoning_effort') || null,
      };
    };
    form.addEventListener('submit', (event) => {
      if (event.submitter?.value !== 'ok') return;
      const settings = read();
      // null (an empty field) is always fine: the provider's default.
      const outside = (value, low, high) => value !== null && (Number.isNaN(value) || value < low || value > high);
      const bad = [];
      if (outside(settings.temperature, 0, 2)) bad.push('Temperature is 0 to 2');
      if (outside(settings.top_p, 0, 1)) bad.push('Top P is 0 to 1');
      if (outside(settings.max_output_tokens, 1, Infinity)) bad.push('Max output tokens is a whole number from 1');
      if (bad.length) {
        event.preventDefault();
        error.textContent = `${bad.join('; ')}.`;
        error.hidden = false;
      }
    });
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      const settings = ok ? read() : null;
      dialog.remove();
      resolve(settings);
    });
    document.body.append(dialog);
    dialog.showModal();
    form.elements.temperature.focus();
  });
}
