// A small SVG line chart: several series on shared axes, a legend, and a text summary for screen readers.

import {fmtNumber, h, svg} from './dom.js';

export const PALETTE = ['#1747a6', '#c2410c', '#17632d', '#7e22ce', '#a3211b', '#0e7490', '#8a5a00', '#be185d'];
const W = 640, H = 260, M = {left: 56, right: 14, top: 12, bottom: 34};

/** Round tick values spanning [lo, hi], about `count` of them. */
function ticks(lo, hi, count = 5) {
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function extent(values, padZero) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (padZero) lo = Math.min(lo, 0);
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  return [lo, hi];
}

/**
 * lineChart({title, series: [{name, points: [[x, y], ...]}], xLabel, xFormat, yFormat, zeroBased, xTicks})
 * xTicks: the x values to label (e.g. each day's start), thinned to at most 8; default: round numbers.
 * Returns a <figure>; its data-points attribute counts the points drawn.
 */
export function lineChart({title, series, xLabel = '', xFormat = fmtNumber, yFormat = fmtNumber, zeroBased = false,
  xTicks = null}) {
  const drawn = series.map((s, i) => ({...s, color: s.color || PALETTE[i % PALETTE.length],
    points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))})).filter((s) => s.points.length);
  const all = drawn.flatMap((s) => s.points);
  const fig = h('figure', {class: 'chart', dataset: {points: all.length}}, h('figcaption', {}, title));
  if (!all.length) {
    fig.append(h('p', {class: 'muted'}, 'No data yet.'));
    return fig;
  }

  const [x0, x1] = extent(all.map((p) => p[0]), false);
  const [y0, y1] = extent(all.map((p) => p[1]), zeroBased);
  const xs = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const ys = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const summary = drawn.map((s) => {
    const last = s.points[s.points.length - 1];
    return `${s.name}: ${s.points.length} points, last ${yFormat(last[1])} at ${xLabel ? `${xLabel} ` : ''}${xFormat(last[0])}`;
  }).join('; ');
  const chart = svg('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}. ${summary}.`});

  const grid = svg('g', {class: 'grid'});
  const axis = svg('g', {class: 'axis'});
  for (const t of ticks(y0, y1)) {
    if (t < y0 || t > y1) continue;
    grid.append(svg('line', {x1: M.left, x2: W - M.right, y1: ys(t), y2: ys(t)}));
    axis.append(svg('text', {x: M.left - 6, y: ys(t) + 4, 'text-anchor': 'end'}, yFormat(t)));
  }
  const every = xTicks ? Math.ceil(xTicks.length / 8) : 1;
  const xAt = xTicks ? xTicks.filter((_, i) => (xTicks.length - 1 - i) % every === 0) : ticks(x0, x1, 6);
  for (const t of xAt) {
    if (t < x0 || t > x1) continue;
    axis.append(svg('line', {x1: xs(t), x2: xs(t), y1: H - M.bottom, y2: H - M.bottom + 4}));
    axis.append(svg('text', {x: xs(t), y: H - M.bottom + 16, 'text-anchor': 'middle'}, xFormat(t)));
  }
  axis.append(svg('path', {d: `M${M.left},${M.top}V${H - M.bottom}H${W - M.right}`, fill: 'none'}));
  if (xLabel) axis.append(svg('text', {x: (M.left + W - M.right) / 2, y: H - 4, 'text-anchor': 'middle'}, xLabel));
  chart.append(grid, axis);

  for (const s of drawn) {
    const d = s.points.map(([x, y], i) => `${i ? 'L' : 'M'}${xs(x).toFixed(1)},${ys(y).toFixed(1)}`).join('');
    const g = svg('g', {class: 'series', dataset: {name: s.name, points: s.points.length}});
    g.append(svg('path', {d, fill: 'none', stroke: s.color, 'stroke-width': 2, 'stroke-linejoin': 'round'}));
    if (s.points.length <= 40) {  // sparse series (validation every few steps, a single point): show each one
      for (const [x, y] of s.points) {
        g.append(svg('circle', {cx: xs(x), cy: ys(y), r: 3, fill: s.color},
          svg('title', {}, `${s.name}: ${yFormat(y)} at ${xFormat(x)}`)));
      }
    }
    chart.append(g);
  }
  fig.append(chart, h('ul', {class: 'legend'}, drawn.map((s) => h('li', {},
    h('span', {class: 'swatch', 'aria-hidden': 'true', dataset: {color: s.color}}), s.name,
    ` (${yFormat(s.points[s.points.length - 1][1])})`))));
  // Swatch colours through the CSSOM: the page's CSP forbids inline style attributes.
  fig.querySelectorAll('.swatch').forEach((el) => { el.style.background = el.dataset.color; });
  return fig;
}
