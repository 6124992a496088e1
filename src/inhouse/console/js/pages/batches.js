// Batches: the paged list (refreshed while a batch on the page is moving) and the form that creates a batch from
// a file with purpose `batch` (picked from the uploaded ones, or uploaded here).

import {ApiError} from '../api.js';
import {field, fill, fmtBytes, fmtNumber, fmtTime, h, select, statusBadge, table} from '../dom.js';
import {uploadFile} from '../upload.js';
import {previewText} from './files.js';

export const ENDPOINTS = ['/v1/chat/completions', '/v1/completions', '/v1/embeddings', '/v1/images/generations'];
export const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];
const POLL_MS = 2000;
const MAX_METADATA_KEYS = 16;   // OpenAI's limit; the server checks it (and the key and value lengths) too

/** Done (completed + failed) of total as a two-part bar (completed, failed) with its numbers beside it. */
export function progress(batch, {label = 'Progress', large = false} = {}) {
  const c = batch.request_counts || {total: 0, completed: 0, failed: 0};
  const done = c.completed + c.failed;
  const counted = c.total > 0;
  const n = fmtNumber;
  const text = counted ? `${n(done)} of ${n(c.total)}` : batch.status === 'validating' ? 'Not counted yet' : '—';
  const said = counted ? `${text} requests done: ${n(c.completed)} completed, ${n(c.failed)} failed` : text;
  const ok = h('span', {class: 'meter-completed'});
  const bad = h('span', {class: 'meter-failed'});
  // Widths through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
  ok.style.width = counted ? `${(100 * c.completed) / c.total}%` : '0%';
  bad.style.width = counted ? `${(100 * c.failed) / c.total}%` : '0%';
  return h('div', {class: large ? 'progress large' : 'progress'},
    h('div', {class: 'meter', role: 'progressbar', 'aria-label': label, 'aria-valuemin': 0,
              'aria-valuemax': Math.max(c.total, 1), 'aria-valuenow': done, 'aria-valuetext': said,
              dataset: {total: c.total, completed: c.completed, failed: c.failed}}, ok, bad),
    h('span', {class: 'meter-text'}, text));
}

export async function mount(ctx) {
  const perPage = select(['10', '20', '50', '100'], '20', {name: 'per-page'});
  const box = h('div', {}, h('p', {class: 'muted'}, 'Loading batches…'));
  const prev = h('button', {type: 'button', class: 'secondary'}, 'Previous page');
  const next = h('button', {type: 'button', class: 'secondary'}, 'Next page');
  const pageLabel = h('span', {class: 'muted'});
  fill(ctx.main, h('div', {class: 'row title-row'}, h('h1', {}, 'Batches'),
    h('a', {class: 'button', href: '#/batches/new'}, 'New batch')),
  h('div', {class: 'row'}, field('Per page', perPage)), box, h('div', {class: 'actions'}, prev, next, pageLabel));

  // `after` cursors of the pages up to the current one; the current page's own cursor is cursors.at(-1).
  let cursors = [undefined];
  let current = null;

  const render = () => {
    if (!current.data.length) {
      fill(box, h('p', {}, 'No batches yet. ', h('a', {href: '#/batches/new'}, 'Create one'),
        ' from an uploaded file with purpose “batch”.'));
    } else {
      fill(box, table(['Batch', 'Status', 'Endpoint', 'Progress', 'Created'], current.data.map((b) => h('tr', {dataset: {id: b.id}},
        h('td', {}, h('a', {href: `#/batches/${b.id}`, class: 'mono'}, b.id)),
        h('td', {}, statusBadge(b.status)), h('td', {class: 'mono'}, b.endpoint),
        h('td', {}, progress(b, {label: `Progress of ${b.id}`})), h('td', {}, fmtTime(b.created_at)))),
      {id: 'batches-table'}));
    }
    prev.disabled = cursors.length === 1;
    next.disabled = !current.has_more;
    pageLabel.textContent = `Page ${cursors.length}`;
  };

  const fetchPage = () => ctx.api.get('/batches', {limit: perPage.value, after: cursors.at(-1)}, ctx.signal);
  const load = async () => {
    current = await fetchPage();
    render();
  };
  prev.addEventListener('click', () => { cursors.pop(); load().catch((e) => ctx.fail(e, box)); });
  next.addEventListener('click', () => {
    cursors.push(current.data[current.data.length - 1].id);
    load().catch((e) => ctx.fail(e, box));
  });
  perPage.addEventListener('change', () => { cursors = [undefined]; load().catch((e) => ctx.fail(e, box)); });
  await load();

  // While a batch on this page is moving, keep the page fresh; redrawn only when something changed, so keyboard
  // focus on a link stays put.
  let busy = false;
  ctx.every(POLL_MS, async () => {
    if (busy || !current || current.data.every((b) => TERMINAL.includes(b.status))) return;
    busy = true;
    try {
      const fresh = await fetchPage();
      if (JSON.stringify(fresh) !== JSON.stringify(current)) {
        current = fresh;
        render();
      }
    } catch { /* the next tick tries again */ } finally {
      busy = false;
    }
  });
}

/** `key=value` lines -> an object (blank lines skipped); throws an Error naming the first bad line. */
export function parseMetadata(text) {
  const out = {};
  const lines = text.split('\n').map((l) => l.trim());
  lines.forEach((l, i) => {
    if (!l) return;
    const cut = l.indexOf('=');
    if (cut <= 0) throw new Error(`Metadata line ${i + 1} is not key=value.`);
    out[l.slice(0, cut).trim()] = l.slice(cut + 1).trim();
  });
  return Object.keys(out).length ? out : undefined;
}

export async function mountCreate(ctx) {
  const error = h('p', {class: 'error', role: 'alert'});
  const form = h('form', {class: 'card', 'aria-labelledby': 'new-batch-title'}, h('p', {class: 'muted'}, 'Loading…'));
  fill(ctx.main, h('p', {}, h('a', {href: '#/batches'}, '← All batches')),
    h('h1', {id: 'new-batch-title'}, 'New batch'), form);
  const files = await ctx.api.all('/files', {purpose: 'batch', limit: 100}, 500, ctx.signal);
  const option = (f) => [f.id, `${f.filename} (${f.id}, ${fmtBytes(f.bytes)})`];
  const input = select(files.map(option), ctx.query.get('input_file_id') || undefined,
    {name: 'input_file_id', required: true});
  const none = h('p', {class: 'notice'}, 'No file with purpose “batch” yet: upload one below or on the ',
    h('a', {href: '#/files'}, 'Files'), ' page.');
  none.hidden = files.length > 0;
  const picker = h('input', {type: 'file', name: 'upload', accept: '.jsonl,application/jsonl,application/x-ndjson'});
  const sending = h('progress', {max: 1, value: 0, hidden: true, 'aria-label': 'Upload progress'});
  const sent = h('span', {class: 'muted', 'aria-live': 'polite'});
  const endpoint = select(ENDPOINTS, ENDPOINTS[0], {name: 'endpoint'});
  const endpointHint = h('span', {});
  const window_ = select([['24h', '24 hours']], '24h', {name: 'completion_window'});
  const metadata = h('textarea', {name: 'metadata', rows: 3, spellcheck: 'false', placeholder: 'team=search'});
  const submit = h('button', {type: 'submit', disabled: !files.length}, 'Create batch');

  // The endpoint follows the chosen file's first line (its `url`), read from the file's first few KB.
  let sniffed = 0;
  const sniff = async () => {
    const asked = ++sniffed;
    endpointHint.textContent = '';
    if (!input.value) return;
    try {
      const {lines} = await previewText(ctx.api, input.value, ctx.signal);
      const url = lines.length ? JSON.parse(lines[0]).url : null;
      if (asked !== sniffed || !ENDPOINTS.includes(url)) return;
      endpoint.value = url;
      endpointHint.textContent = ' Set from the file’s first line.';
    } catch { /* not JSON or unreadable: the batch's own checks will say so */ }
  };
  input.addEventListener('change', sniff);

  picker.addEventListener('change', async () => {
    const [file] = picker.files;
    if (!file) return;
    error.textContent = '';
    sending.hidden = false;
    sending.max = file.size || 1;
    sending.value = 0;
    sent.textContent = `Uploading ${file.name}…`;
    try {
      const f = await uploadFile(ctx.api, file, 'batch', (done) => { sending.value = done; }, ctx.signal);
      const [value, text] = option(f);
      input.prepend(h('option', {value}, text));
      input.value = value;
      none.hidden = true;
      submit.disabled = false;
      sent.textContent = `Uploaded ${f.filename} as ${f.id}.`;
      ctx.announce(`Uploaded ${f.filename}`);
      await sniff();
    } catch (err) {
      sent.textContent = '';
      error.textContent = `The upload failed: ${err.message}`;
    } finally {
      sending.hidden = true;
      picker.value = '';
    }
  });

  fill(form, none,
    h('div', {class: 'grid-2'},
      field('Input file', input, 'JSONL, one request a line, uploaded with purpose “batch”.'),
      h('div', {}, field('Or upload a JSONL file', picker), h('div', {class: 'row'}, sending, sent)),
      field('Endpoint', endpoint, h('span', {}, 'Every line’s url must be this endpoint.', endpointHint)),
      field('Completion window', window_, 'The batch ends expired if it has not finished by then.'),
      field('Metadata', metadata, `Optional: one key=value a line, at most ${MAX_METADATA_KEYS}.`)),
    h('div', {class: 'actions'}, submit, h('a', {href: '#/batches', class: 'button secondary'}, 'Cancel')),
    error);
  if (files.length) sniff();

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const body = {input_file_id: input.value, endpoint: endpoint.value, completion_window: window_.value};
    try {
      const meta = parseMetadata(metadata.value);
      if (meta) body.metadata = meta;
    } catch (err) {
      error.textContent = err.message;
      metadata.focus();
      return;
    }
    submit.disabled = true;
    try {
      const batch = await ctx.api.post('/batches', body);
      ctx.announce(`Created batch ${batch.id}`);
      location.hash = `#/batches/${batch.id}`;
    } catch (err) {
      error.textContent = err instanceof ApiError && err.param ? `${err.message} (${err.param})` : err.message;
      submit.disabled = false;
    }
  });
}
