// Files: upload by drag and drop (or a file picker) with progress, a paged list with a purpose filter, a preview
// of a file's first lines (only the first few KB are downloaded), download and delete.

import {field, fill, fmtBytes, fmtTime, h, select, table} from '../dom.js';
import {uploadFile} from '../upload.js';

const UPLOAD_PURPOSES = ['fine-tune', 'assistants', 'batch', 'vision', 'user_data', 'evals'];
const LIST_PURPOSES = [['', 'All purposes'], ...UPLOAD_PURPOSES.map((p) => [p, p]),
  ['fine-tune-results', 'fine-tune-results'], ['batch_output', 'batch_output']];
const PREVIEW_BYTES = 8 * 1024;
const PREVIEW_LINES = 10;

/** The first lines of a file: reads the stream until PREVIEW_BYTES, then stops the download. */
export async function previewText(api, fileId, signal) {
  const response = await api.raw('GET', `/files/${fileId}/content`, {signal});
  const reader = response.body.getReader();
  const chunks = [];
  let size = 0;
  let complete = false;
  while (size < PREVIEW_BYTES) {
    const {value, done} = await reader.read();
    if (done) { complete = true; break; }
    chunks.push(value);
    size += value.length;
  }
  if (!complete) await reader.cancel();
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  const text = new TextDecoder().decode(bytes.subarray(0, PREVIEW_BYTES), {stream: !complete});
  let lines = text.split('\n');
  if (!complete) lines = lines.slice(0, -1);   // the last line was cut by the byte limit
  return {lines: lines.filter((l) => l.trim()).slice(0, PREVIEW_LINES), truncated: !complete || lines.length > PREVIEW_LINES};
}

/** Save a file's content under its name (fetched with the key, so not a plain link). */
export async function downloadFile(api, fileId, filename) {
  const name = filename || (await api.get(`/files/${fileId}`)).filename;
  const response = await api.raw('GET', `/files/${fileId}/content`);
  const url = URL.createObjectURL(await response.blob());
  const a = h('a', {href: url, download: name, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function mount(ctx) {
  const purpose = select(UPLOAD_PURPOSES, 'fine-tune', {name: 'upload-purpose'});
  const picker = h('input', {type: 'file', multiple: true, class: 'visually-hidden', tabindex: '-1', 'aria-hidden': 'true'});
  const choose = h('button', {type: 'button', class: 'secondary', onclick: () => picker.click()}, 'Choose files…');
  const drop = h('div', {class: 'dropzone', id: 'dropzone'},
    h('p', {}, 'Drop files here to upload them, or ', choose), picker);
  const uploads = h('ul', {class: 'uploads', 'aria-label': 'Uploads'});
  const filter = select(LIST_PURPOSES, ctx.query.get('purpose') || '', {name: 'purpose-filter'});
  const perPage = select(['10', '20', '50', '100'], '20', {name: 'per-page'});
  const listBox = h('div', {}, h('p', {class: 'muted'}, 'Loading…'));
  const prev = h('button', {type: 'button', class: 'secondary'}, 'Previous page');
  const next = h('button', {type: 'button', class: 'secondary'}, 'Next page');
  const pageLabel = h('span', {class: 'muted'});
  const preview = h('section', {'aria-labelledby': 'preview-h', hidden: true});
  const message = h('p', {class: 'error', role: 'alert'});

  fill(ctx.main, h('h1', {}, 'Files'),
    h('section', {'aria-labelledby': 'upload-h'}, h('h2', {id: 'upload-h'}, 'Upload'),
      h('div', {class: 'row'}, field('Purpose of new files', purpose)), drop, uploads),
    h('section', {'aria-labelledby': 'list-h'}, h('h2', {id: 'list-h'}, 'Your files'),
      h('div', {class: 'row'}, field('Show', filter), field('Per page', perPage)), message, listBox,
      h('div', {class: 'actions'}, prev, next, pageLabel)),
    preview);

  // `after` cursors of the pages before the current one; the current page's own cursor is cursors.at(-1).
  let cursors = [undefined];
  let current = null;

  const showPreview = async (f) => {
    preview.hidden = false;
    fill(preview, h('h2', {id: 'preview-h'}, 'Preview of ', h('span', {class: 'mono'}, f.filename)),
      h('p', {class: 'muted'}, 'Loading…'));
    try {
      const {lines, truncated} = await previewText(ctx.api, f.id, ctx.signal);
      fill(preview, h('h2', {id: 'preview-h'}, 'Preview of ', h('span', {class: 'mono'}, f.filename)),
        h('p', {class: 'muted'}, truncated ? `The first ${lines.length} lines.` : `All ${lines.length} lines.`),
        h('pre', {id: 'preview-text', tabindex: '0'}, lines.join('\n')));
    } catch (err) {
      ctx.fail(err, preview);
    }
    preview.scrollIntoView({block: 'nearest'});
  };

  const download = (f) => downloadFile(ctx.api, f.id, f.filename).catch((err) => { message.textContent = err.message; });

  const remove = async (f) => {
    if (!window.confirm(`Delete ${f.filename} (${f.id})? This cannot be undone.`)) return;
    try {
      await ctx.api.del(`/files/${f.id}`);
      ctx.announce(`Deleted ${f.filename}`);
      await load();
    } catch (err) {
      message.textContent = err.message;
    }
  };

  const load = async () => {
    message.textContent = '';
    current = await ctx.api.get('/files', {purpose: filter.value, limit: perPage.value, after: cursors.at(-1)}, ctx.signal);
    if (!current.data.length && cursors.length > 1) {  // the last item of this page was deleted: step back
      cursors.pop();
      return load();
    }
    fill(listBox, current.data.length ? table(['Name', 'Purpose', ['Size', 'num'], 'Created', 'Status', 'Actions'],
      current.data.map((f) => h('tr', {dataset: {id: f.id}},
        h('td', {}, h('span', {class: 'mono'}, f.filename), h('br'), h('span', {class: 'muted mono'}, f.id)),
        h('td', {}, f.purpose), h('td', {class: 'num'}, fmtBytes(f.bytes)), h('td', {}, fmtTime(f.created_at)),
        h('td', {}, f.status || ''),
        h('td', {}, h('div', {class: 'actions'},
          h('button', {type: 'button', class: 'small secondary', onclick: () => showPreview(f),
                       'aria-label': `Preview ${f.filename}`}, 'Preview'),
          h('button', {type: 'button', class: 'small secondary', onclick: () => download(f),
                       'aria-label': `Download ${f.filename}`}, 'Download'),
          h('button', {type: 'button', class: 'small danger', onclick: () => remove(f),
                       'aria-label': `Delete ${f.filename}`}, 'Delete'))))), {id: 'files-table'})
      : h('p', {class: 'muted'}, filter.value ? `No files with purpose ${filter.value}.` : 'No files yet.'));
    prev.disabled = cursors.length === 1;
    next.disabled = !current.has_more;
    pageLabel.textContent = `Page ${cursors.length}`;
  };

  prev.addEventListener('click', () => { cursors.pop(); load().catch((e) => ctx.fail(e, listBox)); });
  next.addEventListener('click', () => {
    cursors.push(current.data[current.data.length - 1].id);
    load().catch((e) => ctx.fail(e, listBox));
  });
  for (const control of [filter, perPage]) {
    control.addEventListener('change', () => { cursors = [undefined]; load().catch((e) => ctx.fail(e, listBox)); });
  }

  const send = async (file) => {
    const bar = h('progress', {max: file.size || 1, value: 0, 'aria-label': `Upload of ${file.name}`});
    const state = h('span', {}, 'Starting…');
    uploads.append(h('li', {}, h('span', {class: 'mono'}, file.name, ` (${fmtBytes(file.size)})`), bar, state));
    try {
      const created = await uploadFile(ctx.api, file, purpose.value, (sent, total) => {
        bar.value = sent;
        state.textContent = `${Math.round((100 * sent) / (total || 1))}%`;
      }, ctx.signal);
      bar.value = bar.max;
      state.textContent = `Done: ${created.id}`;
      state.className = 'success-text';
      ctx.announce(`Uploaded ${file.name}`);
      cursors = [undefined];
      await load();
    } catch (err) {
      state.textContent = `Failed: ${err.message}`;
      state.setAttribute('role', 'alert');
    }
  };
  const sendAll = (list) => { for (const file of list) send(file); };

  picker.addEventListener('change', () => { sendAll([...picker.files]); picker.value = ''; });
  for (const type of ['dragenter', 'dragover']) {
    drop.addEventListener(type, (e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'copy'; drop.classList.add('over'); });
  }
  drop.addEventListener('dragleave', (e) => { if (!drop.contains(e.relatedTarget)) drop.classList.remove('over'); });
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    sendAll([...e.dataTransfer.files]);
  });

  await load();
}
