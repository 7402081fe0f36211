// Markdown to DOM: marked parses, DOMPurify sanitizes (always: model output is untrusted), highlight.js colours
// code blocks in a few common languages, and each block gets a copy button. No HTML string is ever put into the
// page: DOMPurify hands back a DOM fragment.

import { marked } from './vendor/marked-18.2.1/marked.esm.js';
import DOMPurify from './vendor/dompurify-3.4.18/purify.es.mjs';
import hljs from './vendor/highlight.js-11.12.0/core.min.js';
import bash from './vendor/highlight.js-11.12.0/languages/bash.min.js';
import c from './vendor/highlight.js-11.12.0/languages/c.min.js';
import cpp from './vendor/highlight.js-11.12.0/languages/cpp.min.js';
import css from './vendor/highlight.js-11.12.0/languages/css.min.js';
import diff from './vendor/highlight.js-11.12.0/languages/diff.min.js';
import go from './vendor/highlight.js-11.12.0/languages/go.min.js';
import java from './vendor/highlight.js-11.12.0/languages/java.min.js';
import javascript from './vendor/highlight.js-11.12.0/languages/javascript.min.js';
import json from './vendor/highlight.js-11.12.0/languages/json.min.js';
import markdown from './vendor/highlight.js-11.12.0/languages/markdown.min.js';
import python from './vendor/highlight.js-11.12.0/languages/python.min.js';
import rust from './vendor/highlight.js-11.12.0/languages/rust.min.js';
import shell from './vendor/highlight.js-11.12.0/languages/shell.min.js';
import sql from './vendor/highlight.js-11.12.0/languages/sql.min.js';
import typescript from './vendor/highlight.js-11.12.0/languages/typescript.min.js';
import xml from './vendor/highlight.js-11.12.0/languages/xml.min.js';
import yaml from './vendor/highlight.js-11.12.0/languages/yaml.min.js';
import { h } from './util.js';

const languages = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(languages)) hljs.registerLanguage(name, grammar);

marked.setOptions({ gfm: true, breaks: false });

const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe', 'object', 'embed'],
  FORBID_ATTR: ['style', 'id', 'name'],
};

// Links open in a new tab without handing it this page (and nothing but http(s), mailto and relative survive).
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A' && node.hasAttribute('href')) {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
  }
});

function copyButton(code) {
  const button = h('button', { type: 'button', class: 'copy', 'aria-label': 'Copy code' }, 'Copy');
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Copy failed';
    }
    setTimeout(() => (button.textContent = 'Copy'), 1500);
  });
  return button;
}

/** Replace `target`'s children with `text` rendered as sanitized Markdown. */
export function renderMarkdown(target, text) {
  const html = marked.parse(text || '', { async: false });
  const fragment = DOMPurify.sanitize(html, PURIFY);
  for (const code of fragment.querySelectorAll('pre > code')) {
    const lang = [...code.classList].find((c) => c.startsWith('language-'))?.slice(9);
    if (lang && hljs.getLanguage(lang)) {
      // highlight.js escapes the code's text itself and builds spans from it.
      const result = hljs.highlight(code.textContent, { language: lang, ignoreIllegals: true });
      const clean = DOMPurify.sanitize(result.value, { RETURN_DOM_FRAGMENT: true, ALLOWED_TAGS: ['span'], ALLOWED_ATTR: ['class'] });
      code.replaceChildren(clean);
      code.classList.add('hljs');
    }
    const pre = code.parentElement;
    const wrap = h('div', { class: 'code-block' });
    pre.replaceWith(wrap);
    wrap.append(h('div', { class: 'code-bar' }, h('span', { class: 'code-lang' }, lang || 'text'), copyButton(code)), pre);
  }
  target.replaceChildren(fragment);
}
