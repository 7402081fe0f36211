// Files: attachments being uploaded (with progress and image previews) for the next message, and the session's
// files with delete. A refused upload (too large: 413, type not allowed: 415) shows the server's reason.

import * as api from './api.js';
import { emit, on, state } from './store.js';
import { formatBytes, h, icon } from './util.js';
import { ensureSession, showError } from './view-chat.js';

let counter = 0;

export function resetFiles() {
  for (const a of state.chat?.attachments || []) if (a.preview) URL.revokeObjectURL(a.preview);
}

export async function addFiles(files) {
  const chat = state.chat;
  let sessionId;
  try {
    sessionId = await ensureSession();
  } catch (error) {
    return showError(error.detail);
  }
  for (const file of files) {
    const item = {
      key: ++counter,
      file,
      progress: 0,
      uploaded: null,
      preview: file.type.startsWith('image/') ? URL.createObjectURL(file) : null,
    };
    chat.attachments.push(item);
    emit('files');
    api
      .upload(sessionId, file, (fraction) => {
        item.progress = fraction;
        emit('files');
      })
      .then((uploaded) => {
        item.uploaded = uploaded;
        item.progress = 1;
        if (state.chat === chat) chat.files = [...chat.files.filter((f) => f.id !== uploaded.id), uploaded];
        emit('files');
      })
      .catch((error) => {
        chat.attachments = chat.attachments.filter((a) => a !== item);
        if (item.preview) URL.revokeObjectURL(item.preview);
        const limit = state.config?.limits?.max_upload_bytes;
        let message = `${file.name}: ${error.detail}`;
        if (error.status === 413 || (error.status === 0 && limit && file.size > limit)) {
          message = `${file.name} is too large to upload${limit ? ` (the limit is ${formatBytes(limit)})` : ''}.`;
        } else if (error.status === 415) {
          message = `${file.name} cannot be attached: this type of file is not accepted (${error.detail}).`;
        }
        showError(message);
        emit('files');
      });
  }
}

export function renderFiles({ attachmentsSlot, filesSlot }) {
  function renderAttachments() {
    const chat = state.chat;
    attachmentsSlot.replaceChildren(
      ...(chat?.attachments || []).map((a) => {
        const remove = h('button', { type: 'button', class: 'icon', 'aria-label': `Remove ${a.file.name}` }, icon('close'));
        remove.addEventListener('click', () => {
          chat.attachments = chat.attachments.filter((x) => x !== a);
          if (a.preview) URL.revokeObjectURL(a.preview);
          emit('files');
        });
        return h(
          'div',
          { class: 'attachment' },
          a.preview ? h('img', { src: a.preview, alt: `Preview of ${a.file.name}`, class: 'thumb' }) : null,
          h('span', { class: 'att-name' }, a.file.name),
          a.uploaded
            ? h('span', { class: 'muted small' }, `${formatBytes(a.file.size)} · ready`)
            : h('progress', { max: 1, value: a.progress, 'aria-label': `Uploading ${a.file.name}` }),
          remove,
        );
      }),
    );
  }

  function renderList() {
    const chat = state.chat;
    const files = chat?.files || [];
    if (!files.length) return filesSlot.replaceChildren();
    const open = filesSlot.querySelector('details')?.open ?? false;
    const details = h(
      'details',
      { class: 'files', open },
      h('summary', {}, `Files in this chat (${files.length})`),
      h(
        'ul',
        {},
        files.map((f) => {
          const del = h('button', { type: 'button', class: 'icon', 'aria-label': `Delete file ${f.name}` }, icon('trash'));
          del.addEventListener('click', async () => {
            try {
              await api.deleteFile(chat.sessionId, f.id);
              chat.files = chat.files.filter((x) => x.id !== f.id);
              emit('files');
            } catch (error) {
              showError(error.detail);
            }
          });
          return h(
            'li',
            {},
            h('span', { class: 'file-name' }, f.name),
            h('span', { class: 'muted small' }, `${f.content_type} · ${formatBytes(f.size)}${f.tokens ? ` · ${f.tokens} tokens` : ''}`),
            del,
          );
        }),
      ),
    );
    filesSlot.replaceChildren(details);
  }

  on('files', () => {
    renderAttachments();
    renderList();
  });
}
