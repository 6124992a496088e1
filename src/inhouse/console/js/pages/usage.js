// Usage: requests, tokens, images and training tokens per day, per API key or per model, from OpenAI's usage API
// (GET /v1/organization/usage/{kind}, daily buckets grouped by api_key_id and model).

import {ApiError} from '../api.js';
import {lineChart} from '../chart.js';
import {field, fill, fmtDay, fmtNumber, h, select, table} from '../dom.js';

const DAY = 86400;
const KINDS = ['completions', 'embeddings', 'images', 'fine_tuning'];
const MAX_PAGES = 20;
// Each chart: its title and what one result contributes to it.
const MEASURES = [
  ['Requests', (kind, r) => (kind === 'fine_tuning' ? 0 : r.num_model_requests || 0)],
  ['Tokens', (kind, r) => (kind === 'completions' || kind === 'embeddings'
    ? (r.input_tokens || 0) + (r.output_tokens || 0) : 0)],
  ['Images', (kind, r) => (kind === 'images' ? r.images || 0 : 0)],
  ['Training tokens', (kind, r) => (kind === 'fine_tuning' ? r.trained_tokens || 0 : 0)],
];

/** Every bucket of one kind of usage since `start`, following next_page. */
async function fetchKind(ctx, kind, start) {
  const buckets = [];
  let page;
  for (let i = 0; i < MAX_PAGES; i += 1) {
    const answer = await ctx.api.get(`/organization/usage/${kind}`, {start_time: start, bucket_width: '1d', limit: 31,
      group_by: ['api_key_id', 'model'], page}, ctx.signal);
    buckets.push(...answer.data);
    if (!answer.has_more || !answer.next_page) break;
    page = answer.next_page;
  }
  return buckets;
}

/** Key names for the legend, when this key may list keys (an admin); ids otherwise. */
async function keyNames(ctx) {
  const names = new Map();
  if (!ctx.can.keys) return names;
  try {
    const projects = await ctx.api.all('/organization/projects', {limit: 100}, 200, ctx.signal);
    for (const p of projects) {
      const keys = await ctx.api.all(`/organization/projects/${p.id}/api_keys`, {limit: 100}, 500, ctx.signal);
      for (const k of keys) names.set(k.id, k.name ? `${k.name} (${k.redacted_value || k.id})` : k.id);
    }
  } catch { /* ids will do */ }
  return names;
}

export async function mount(ctx) {
  const range = select([['7', 'Last 7 days'], ['14', 'Last 14 days'], ['30', 'Last 30 days']], '7', {name: 'range'});
  const group = select([['api_key_id', 'API key'], ['model', 'Model']], 'api_key_id', {name: 'group'});
  const box = h('div', {id: 'usage-charts'}, h('p', {class: 'muted'}, 'Loading usage…'));
  const refresh = h('button', {type: 'button', class: 'secondary'}, 'Refresh');
  fill(ctx.main, h('h1', {}, 'Usage'),
    h('div', {class: 'row'}, field('Period', range), field('Group by', group), refresh), box);

  const names = await keyNames(ctx);
  let data = null;   // kind -> buckets

  const render = () => {
    const days = Number(range.value);
    const end = Math.floor(Date.now() / 1000 / DAY) * DAY + DAY;
    const start = end - days * DAY;
    const by = group.value;
    const labelOf = (r) => (by === 'model' ? r.model || '(no model)'
      : r.api_key_id ? names.get(r.api_key_id) || r.api_key_id : '(no key: open mode)');
    const charts = [];
    const totals = new Map();   // group label -> [requests, tokens, images, training tokens]
    MEASURES.forEach(([title, measure], mi) => {
      const perGroup = new Map();   // label -> Map(day -> value)
      for (const kind of KINDS) {
        for (const bucket of data[kind]) {
          const day = Math.floor(bucket.start_time / DAY) * DAY;
          if (day < start) continue;
          for (const r of bucket.results || []) {
            const v = measure(kind, r);
            if (!v) continue;
            const label = labelOf(r);
            if (!perGroup.has(label)) perGroup.set(label, new Map());
            const series = perGroup.get(label);
            series.set(day, (series.get(day) || 0) + v);
            if (!totals.has(label)) totals.set(label, [0, 0, 0, 0]);
            totals.get(label)[mi] += v;
          }
        }
      }
      const series = [...perGroup].map(([name, byDay]) => {
        const points = [];
        for (let d = start; d < end; d += DAY) points.push([d, byDay.get(d) || 0]);
        return {name, points};
      });
      const days = [];
      for (let d = start; d < end; d += DAY) days.push(d);
      charts.push(lineChart({title: `${title} per day`, series, xFormat: fmtDay, zeroBased: true, xTicks: days,
        yFormat: (v) => fmtNumber(v, 3)}));
    });
    const rows = [...totals].sort((a, b) => b[1][0] - a[1][0]).map(([label, t]) => h('tr', {},
      h('td', {}, label), t.map((v) => h('td', {class: 'num'}, fmtNumber(v)))));
    fill(box, h('div', {class: 'charts'}, charts), h('h2', {}, `Totals per ${by === 'model' ? 'model' : 'API key'}`),
      rows.length ? table([by === 'model' ? 'Model' : 'API key', ...MEASURES.map(([t]) => [t, 'num'])], rows, {id: 'usage-totals'})
        : h('p', {class: 'muted'}, 'No usage in this period.'));
  };

  const load = async () => {
    const start = (Math.floor(Date.now() / 1000 / DAY) - 30) * DAY;   // the longest period; shorter ones are cut here
    try {
      const lists = await Promise.all(KINDS.map((k) => fetchKind(ctx, k, start)));
      data = Object.fromEntries(KINDS.map((k, i) => [k, lists[i]]));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        fill(box, h('p', {class: 'notice'}, 'This server does not report usage yet.'));
        return;
      }
      if (err instanceof ApiError && err.status === 403) {
        fill(box, h('p', {class: 'notice'}, 'This key may not read usage.'));
        return;
      }
      throw err;
    }
    render();
  };
  refresh.addEventListener('click', async () => {
    refresh.disabled = true;
    try { await load(); ctx.announce('Usage updated'); } catch (err) { ctx.fail(err, box); } finally { refresh.disabled = false; }
  });
  range.addEventListener('change', () => data && render());
  group.addEventListener('change', () => data && render());
  await load();
}
