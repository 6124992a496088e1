// One batch: its progress (polled every second until it ends; the bar moves, nothing reloads), the timeline of
// its timestamps, usage, its files (output and error files downloaded with the key), a failed batch's per-line
// errors, metadata, and Cancel while it is validating or in progress.

import {ApiError} from '../api.js';
import {fill, fmtBytes, fmtNumber, h, statusBadge, table} from '../dom.js';
import {TERMINAL, progress} from './batches.js';
import {downloadFile} from './files.js';

const POLL_MS = 1000;
const CANCELLABLE = ['validating', 'in_progress'];
const STEPS = [['created_at', 'Created'], ['in_progress_at', 'In progress'], ['finalizing_at', 'Finalizing'],
  ['completed_at', 'Completed'], ['failed_at', 'Failed'], ['cancelling_at', 'Cancelling'],
  ['cancelled_at', 'Cancelled'], ['expired_at', 'Expired']];

/** Local date and time to the second (batches often finish within a minute). */
function fmtSeconds(unix) {
  const d = new Date(unix * 1000);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The timestamps the batch has, in the order they happened, each with the time since it was created. */
function timeline(b) {
  const steps = STEPS.filter(([k]) => b[k]).map(([k, name]) => [b[k], name, k]).sort((x, y) => x[0] - y[0]);
  return h('ol', {class: 'timeline', id: 'batch-timeline'}, steps.map(([t, name, k]) => h('li', {dataset: {step: k}},
    h('span', {class: 'step'}, name),
    h('time', {datetime: new Date(t * 1000).toISOString()}, fmtSeconds(t)),
    k === 'created_at' ? null : h('span', {class: 'muted'}, `+${fmtDuration(t - b.created_at)}`))),
  TERMINAL.includes(b.status) || !b.expires_at ? null
    : h('li', {class: 'muted'}, h('span', {class: 'step'}, 'Window ends'),
      h('time', {datetime: new Date(b.expires_at * 1000).toISOString()}, fmtSeconds(b.expires_at))));
}

export async function mount(ctx) {
  const id = ctx.params[0];
  const title = h('h1', {}, 'Batch');
  const badge = h('span', {id: 'batch-status'});
  const controls = h('div', {class: 'actions'});
  const message = h('p', {class: 'error', role: 'alert'});
  const bar = h('div', {id: 'batch-progress'}, h('p', {class: 'muted'}, 'Loading…'));
  const facts = h('div', {});
  const steps = h('div', {});
  const outputs = h('div', {});
  const errors = h('section', {'aria-labelledby': 'errors-h', hidden: true});
  const usage = h('div', {});
  const meta = h('div', {});
  fill(ctx.main, h('p', {}, h('a', {href: '#/batches'}, '← All batches')),
    h('div', {class: 'row title-row'}, title, badge), controls, message,
    h('section', {'aria-labelledby': 'progress-h'}, h('h2', {id: 'progress-h'}, 'Requests'), bar),
    errors, facts,
    h('div', {class: 'grid-2'},
      h('section', {'aria-labelledby': 'timeline-h'}, h('h2', {id: 'timeline-h'}, 'Timeline'), steps),
      h('section', {'aria-labelledby': 'files-h'}, h('h2', {id: 'files-h'}, 'Results'), outputs),
      h('section', {'aria-labelledby': 'usage-h'}, h('h2', {id: 'usage-h'}, 'Usage'), usage),
      h('section', {'aria-labelledby': 'meta-h'}, h('h2', {id: 'meta-h'}, 'Metadata'), meta)));

  let batch = null;
  let inputFile = null;   // the input file's object, for its name; null when it cannot be read (deleted)
  const drawn = new Map();  // part -> the JSON it was last drawn from: a part is redrawn only when it changed

  const part = (el, data, draw) => {
    const key = JSON.stringify(data);
    if (drawn.get(el) === key) return;
    drawn.set(el, key);
    draw();
  };

  const download = (fid) => downloadFile(ctx.api, fid).catch((err) => { message.textContent = err.message; });

  const cancel = async () => {
    if (!window.confirm(`Cancel batch ${id}? Requests already answered are kept in its output file.`)) return;
    message.textContent = '';
    try {
      batch = await ctx.api.post(`/batches/${id}/cancel`, {});
      render();
      title.focus();   // the pressed button is gone
      tick();
    } catch (err) {
      message.textContent = err.message;
    }
  };

  const render = () => {
    const b = batch;
    part(title, b.id, () => fill(title, 'Batch ', h('span', {class: 'mono'}, b.id)));
    part(badge, b.status, () => fill(badge, statusBadge(b.status)));
    part(controls, CANCELLABLE.includes(b.status), () => fill(controls, CANCELLABLE.includes(b.status)
      ? h('button', {type: 'button', class: 'danger', onclick: cancel}, 'Cancel batch') : null));
    part(bar, [b.request_counts, b.status], () => {
      const c = b.request_counts || {total: 0, completed: 0, failed: 0};
      fill(bar, progress(b, {label: 'Requests done', large: true}),
        h('dl', {class: 'counts'}, [['Total', c.total], ['Completed', c.completed], ['Failed', c.failed]].map(
          ([name, n]) => h('div', {}, h('dt', {}, name === 'Total' ? null
            : h('span', {class: `swatch meter-${name.toLowerCase()}`, 'aria-hidden': 'true'}), name),
          h('dd', {id: `count-${name.toLowerCase()}`}, fmtNumber(n))))));
    });
    part(facts, [b.endpoint, b.model, b.input_file_id, b.completion_window, inputFile], () => {
      const name = inputFile ? [inputFile.filename, ' '] : null;
      fill(facts, h('dl', {class: 'facts'},
        h('dt', {}, 'Endpoint'), h('dd', {class: 'mono'}, b.endpoint),
        h('dt', {}, 'Model'), h('dd', {}, b.model || '—'),
        h('dt', {}, 'Input file'), h('dd', {}, h('a', {href: '#/files?purpose=batch', id: 'input-file'}, name,
          h('span', {class: 'mono'}, b.input_file_id)), inputFile ? ` (${fmtBytes(inputFile.bytes)})` : ''),
        h('dt', {}, 'Completion window'), h('dd', {}, b.completion_window)));
    });
    part(steps, STEPS.map(([k]) => b[k]).concat(b.status), () => fill(steps, timeline(b)));
    part(outputs, [b.output_file_id, b.error_file_id, b.status], () => {
      const done = TERMINAL.includes(b.status);
      const row = (label, fid, button, absent) => [h('dt', {}, label), h('dd', {}, fid
        ? [h('span', {class: 'mono'}, fid), ' ', h('button', {type: 'button', class: 'small secondary',
          onclick: () => download(fid)}, button)]
        : h('span', {class: 'muted'}, done ? absent : 'When the batch ends'))];
      fill(outputs, h('dl', {class: 'facts'},
        row('Output file', b.output_file_id, 'Download output', 'None: no request was answered'),
        row('Error file', b.error_file_id, 'Download errors', 'None: no request failed')));
    });
    part(usage, b.usage || null, () => {
      const u = b.usage;
      fill(usage, u ? h('dl', {class: 'facts'},
        h('dt', {}, 'Input tokens'), h('dd', {}, fmtNumber(u.input_tokens)),
        h('dt', {}, 'Output tokens'), h('dd', {}, fmtNumber(u.output_tokens)),
        h('dt', {}, 'Total tokens'), h('dd', {}, fmtNumber(u.total_tokens))) : h('p', {class: 'muted'}, 'None yet.'));
    });
    part(meta, b.metadata || null, () => {
      const entries = Object.entries(b.metadata || {});
      fill(meta, entries.length ? h('dl', {class: 'facts', id: 'batch-metadata'},
        entries.map(([k, v]) => [h('dt', {class: 'mono'}, k), h('dd', {}, v)])) : h('p', {class: 'muted'}, 'None.'));
    });
    part(errors, b.errors || null, () => {
      const list = b.errors ? b.errors.data : [];
      errors.hidden = !list.length;
      if (!list.length) { errors.replaceChildren(); return; }
      const hasParam = list.some((e) => e.param);
      fill(errors, h('h2', {id: 'errors-h'}, 'Errors'),
        h('p', {class: 'muted'}, 'Why the batch failed. Lines count from 1 in the input file.'),
        table(['Line', 'Code', 'Message', ...(hasParam ? ['Param'] : [])], list.map((e) => h('tr', {},
          h('td', {class: 'num'}, e.line === null || e.line === undefined ? '—' : String(e.line)),
          h('td', {class: 'mono'}, e.code), h('td', {}, e.message),
          hasParam ? h('td', {class: 'mono'}, e.param || '') : null)), {id: 'batch-errors'}));
    });
  };

  let busy = false;
  let stop = () => {};
  const poll = async () => {
    const fresh = await ctx.api.get(`/batches/${id}`, undefined, ctx.signal);
    if (batch && fresh.status !== batch.status) ctx.announce(`Batch ${fresh.status.replace('_', ' ')}`);
    batch = fresh;
    render();
    if (TERMINAL.includes(batch.status)) stop();  // a finished batch changes no more
  };
  const tick = async () => {
    if (busy) return;  // a slow answer must not stack polls
    busy = true;
    try {
      await poll();
    } catch (err) {
      if (err.name !== 'AbortError') message.textContent = err.message;
    } finally {
      busy = false;
    }
  };

  try {
    batch = await ctx.api.get(`/batches/${id}`, undefined, ctx.signal);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      fill(bar, h('p', {class: 'error'}, `No batch ${id} is visible to this key.`));
      return;
    }
    throw err;
  }
  try {
    inputFile = await ctx.api.get(`/files/${batch.input_file_id}`, undefined, ctx.signal);
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;   // deleted since: the id alone is shown
  }
  render();
  if (!TERMINAL.includes(batch.status)) stop = ctx.every(POLL_MS, tick);
}
