// One fine-tuning job: its facts, live metric curves (events polled every 2 s, no reload), checkpoints with their
// metrics, the event log, and cancel / pause / resume.

import {ApiError} from '../api.js';
import {lineChart} from '../chart.js';
import {fill, fmtNumber, fmtTime, h, statusBadge, table} from '../dom.js';
import {downloadFile} from './files.js';

const POLL_MS = 2000;
const TERMINAL = ['succeeded', 'failed', 'cancelled'];
const MAX_EVENTS = 10000;   // what one page keeps in memory for a very long job
const SHOWN_EVENTS = 200;
const LABELS = {
  train_loss: 'Training loss', valid_loss: 'Validation loss', full_valid_loss: 'Full validation loss',
  train_mean_token_accuracy: 'Training token accuracy', valid_mean_token_accuracy: 'Validation token accuracy',
  full_valid_mean_token_accuracy: 'Full validation token accuracy',
  train_accuracy: 'Training accuracy', valid_accuracy_at_1: 'Validation accuracy@1', valid_mrr_at_10: 'Validation MRR@10',
};
const NOT_METRICS = new Set(['step', 'total_steps', 'epoch']);

const label = (key) => LABELS[key] || key.replace(/_/g, ' ');

/** The metric curves: every numeric field the metrics events carry, losses on one chart, the rest on another. */
export function metricCharts(events) {
  const byKey = new Map();
  const rows = events.filter((e) => e.type === 'metrics' && e.data && Number.isFinite(e.data.step))
    .sort((a, b) => a.data.step - b.data.step);
  for (const {data} of rows) {
    for (const [key, value] of Object.entries(data)) {
      if (NOT_METRICS.has(key) || typeof value !== 'number' || !Number.isFinite(value)) continue;
      if (!byKey.has(key)) byKey.set(key, []);
      byKey.get(key).push([data.step, value]);
    }
  }
  const series = (pick) => [...byKey].filter(([k]) => pick(k)).map(([k, points]) => ({name: label(k), key: k, points}));
  const losses = series((k) => k.includes('loss'));
  const others = series((k) => !k.includes('loss'));
  const charts = [lineChart({title: 'Loss', series: losses, xLabel: 'step'})];
  if (others.length) {
    const has = (part) => others.some((s) => s.key.includes(part));
    const title = has('mrr') ? 'Accuracy and MRR' : has('token') ? 'Token accuracy' : 'Accuracy';
    charts.push(lineChart({title, series: others, xLabel: 'step', zeroBased: true}));
  } else if (!rows.length) {
    charts.push(lineChart({title: 'Accuracy', series: [], xLabel: 'step'}));
  }
  return charts;
}

export async function mount(ctx) {
  const id = ctx.params[0];
  const title = h('h1', {}, 'Fine-tuning job');
  const badge = h('span', {id: 'job-status'});
  const head = h('div', {class: 'row title-row'}, title, badge);
  const facts = h('div', {}, h('p', {class: 'muted'}, 'Loading…'));
  const controls = h('div', {class: 'actions'});
  const message = h('p', {class: 'error', role: 'alert'});
  const charts = h('div', {class: 'charts', id: 'metric-charts'});
  const checkpoints = h('div', {});
  const log = h('div', {class: 'log', tabindex: '0', role: 'region', 'aria-label': 'Events, newest first'});
  fill(ctx.main, h('p', {}, h('a', {href: '#/fine-tuning'}, '← All jobs')), head, facts, controls, message,
    h('section', {'aria-labelledby': 'metrics-h'}, h('h2', {id: 'metrics-h'}, 'Metrics'), charts),
    h('section', {'aria-labelledby': 'ckpt-h'}, h('h2', {id: 'ckpt-h'}, 'Checkpoints'), checkpoints),
    h('section', {'aria-labelledby': 'events-h'}, h('h2', {id: 'events-h'}, 'Events'), log));

  let job = null;
  const events = new Map();      // id -> event
  let order = [];                // ids, newest first
  let seenCheckpoints = null;  // the ids last drawn

  // Newest first, page by page, until an event already known: what arrived since the last poll.
  const fetchNewEvents = async () => {
    const fresh = [];
    let after;
    for (;;) {
      const page = await ctx.api.get(`/fine_tuning/jobs/${id}/events`, {limit: 100, after}, ctx.signal);
      const unseen = page.data.filter((e) => !events.has(e.id));
      fresh.push(...unseen);
      if (!page.has_more || unseen.length < page.data.length || events.size + fresh.length >= MAX_EVENTS) break;
      after = page.data[page.data.length - 1].id;
    }
    for (const e of fresh) events.set(e.id, e);
    order = [...fresh.map((e) => e.id), ...order].slice(0, MAX_EVENTS);
    return fresh.length;
  };

  const act = async (verb) => {
    if (verb === 'cancel' && !window.confirm(`Cancel job ${id}? It cannot be resumed afterwards.`)) return;
    message.textContent = '';
    try {
      job = await ctx.api.post(`/fine_tuning/jobs/${id}/${verb}`, {});
      ctx.announce(`Job ${job.status}`);
      renderJob();
      // The pressed button is gone (Pause became Resume): keep keyboard focus in the same place.
      (controls.querySelector('button') || title).focus();
      await poll();
    } catch (err) {
      message.textContent = err.message;
    }
  };

  const renderJob = () => {
    const hp = job.hyperparameters || {};
    fill(title, 'Fine-tuning job ', h('span', {class: 'mono'}, job.id));  // the same h1: focus stays on it
    fill(badge, statusBadge(job.status));
    const fileLink = (fid) => (fid ? h('a', {href: '#/files', class: 'mono'}, fid) : '—');
    fill(facts, h('dl', {class: 'facts'},
      h('dt', {}, 'Base model'), h('dd', {}, job.model),
      h('dt', {}, 'Fine-tuned model'), h('dd', {}, job.fine_tuned_model
        ? [h('span', {class: 'mono'}, job.fine_tuned_model), ' ',
          h('a', {href: `#/playground/chat?model=${encodeURIComponent(job.fine_tuned_model)}`}, 'Try it')]
        : '—'),
      h('dt', {}, 'Training file'), h('dd', {}, fileLink(job.training_file)),
      h('dt', {}, 'Validation file'), h('dd', {}, fileLink(job.validation_file)),
      h('dt', {}, 'Method'), h('dd', {}, job.method ? job.method.type : 'supervised'),
      h('dt', {}, 'Hyperparameters'), h('dd', {}, `epochs ${hp.n_epochs}, batch size ${hp.batch_size}, ` +
        `learning rate multiplier ${hp.learning_rate_multiplier}`),
      h('dt', {}, 'Trained tokens'), h('dd', {}, job.trained_tokens === null ? '—' : fmtNumber(job.trained_tokens)),
      h('dt', {}, 'Created'), h('dd', {}, fmtTime(job.created_at)),
      job.estimated_finish ? [h('dt', {}, 'Estimated finish'), h('dd', {}, fmtTime(job.estimated_finish))] : null,
      job.finished_at ? [h('dt', {}, 'Finished'), h('dd', {}, fmtTime(job.finished_at))] : null,
      job.result_files && job.result_files.length
        ? [h('dt', {}, 'Result files'), h('dd', {}, job.result_files.map((f) => h('button', {type: 'button',
          class: 'small secondary', onclick: () => downloadFile(ctx.api, f).catch((err) => { message.textContent = err.message; })},
          `Download ${f}`)))]
        : null),
    job.error && job.error.message ? h('p', {class: 'error'}, `Failed: ${job.error.message}`) : null);
    const running = ['validating_files', 'queued', 'running'].includes(job.status);
    fill(controls,
      running ? h('button', {type: 'button', class: 'secondary', onclick: () => act('pause')}, 'Pause') : null,
      job.status === 'paused' ? h('button', {type: 'button', onclick: () => act('resume')}, 'Resume') : null,
      !TERMINAL.includes(job.status)
        ? h('button', {type: 'button', class: 'danger', onclick: () => act('cancel')}, 'Cancel job') : null);
  };

  const renderMetrics = () => fill(charts, metricCharts([...events.values()]));

  const renderEvents = () => {
    const shown = order.slice(0, SHOWN_EVENTS).map((eid) => events.get(eid));
    fill(log, order.length > SHOWN_EVENTS ? h('p', {class: 'muted'}, `The newest ${SHOWN_EVENTS} of ${order.length} events.`) : null,
      table(['Time', 'Level', 'Message'], shown.map((e) => h('tr', {},
        h('td', {}, fmtTime(e.created_at)), h('td', {}, e.level), h('td', {}, e.message))), {id: 'events-table'}));
  };

  const renderCheckpoints = async () => {
    const list = await ctx.api.get(`/fine_tuning/jobs/${id}/checkpoints`, {limit: 100}, ctx.signal);
    const ids = list.data.map((c) => c.id).join();
    if (ids === seenCheckpoints) return;
    seenCheckpoints = ids;
    if (!list.data.length) { fill(checkpoints, h('p', {class: 'muted'}, 'None yet: one is saved after each epoch.')); return; }
    const keys = [...new Set(list.data.flatMap((c) => Object.keys(c.metrics || {})))].filter((k) => !NOT_METRICS.has(k));
    fill(checkpoints, table(['Step', 'Checkpoint model', ...keys.map((k) => [label(k), 'num']), 'Created'],
      list.data.map((c) => h('tr', {}, h('td', {}, c.step_number),
        h('td', {class: 'mono'}, c.fine_tuned_model_checkpoint),
        keys.map((k) => h('td', {class: 'num'}, fmtNumber((c.metrics || {})[k]))), h('td', {}, fmtTime(c.created_at))))));
  };

  let busy = false;
  const poll = async () => {
    if (busy) return;  // a slow answer must not stack polls
    busy = true;
    try {
      const fresh = await ctx.api.get(`/fine_tuning/jobs/${id}`, undefined, ctx.signal);
      // Redrawn only when the job changed, so a focused button is not replaced under the keyboard every poll.
      if (JSON.stringify(fresh) !== JSON.stringify(job)) {
        job = fresh;
        renderJob();
      }
      if (await fetchNewEvents() || !log.firstChild) {
        renderMetrics();
        renderEvents();
        await renderCheckpoints();
      }
    } finally {
      busy = false;
    }
  };

  try {
    await poll();
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      fill(facts, h('p', {class: 'error'}, `No job ${id} is visible to this key.`));
      return;
    }
    throw err;
  }
  ctx.every(POLL_MS, () => {
    // Terminal jobs change no more; until then the curves grow with each poll.
    if (job && TERMINAL.includes(job.status) && log.firstChild) return;
    poll().catch((err) => { if (err.name !== 'AbortError') message.textContent = err.message; });
  });
}
