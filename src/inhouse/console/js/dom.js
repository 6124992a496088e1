// A tiny DOM builder and formatters. Text always goes in as text nodes, never as HTML, so nothing an API answer
// holds (a file name, a model reply) can inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value' && 'value' in el) el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** h('button', {class: 'x', onclick: f}, 'Text', child, ...) */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

export function svg(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

let uid = 0;
/** A fresh element id, for label/for and aria-describedby pairs. */
export function nextId(prefix = 'f') {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: {label, hint, control} -> <div class="field"><label>…</label>control<hint/></div> */
export function field(label, control, hint) {
  if (!control.id) control.id = nextId();
  const parts = [h('label', {for: control.id}, label), control];
  if (hint) {
    const hintId = nextId('hint');
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('span', {class: 'hint', id: hintId}, hint));
  }
  return h('div', {class: 'field'}, parts);
}

export function select(options, selected, props = {}) {
  const el = h('select', props);
  for (const opt of options) {
    const [value, text] = Array.isArray(opt) ? opt : [opt, opt];
    el.append(h('option', {value, selected: value === selected}, text));
  }
  return el;
}

export function table(headers, rows, props = {}) {
  const head = h('thead', {}, h('tr', {}, headers.map((t) => {
    const [text, cls] = Array.isArray(t) ? t : [t, undefined];
    return h('th', {scope: 'col', class: cls}, text);
  })));
  return h('div', {class: 'table-wrap'}, h('table', props, head, h('tbody', {}, rows)));
}

export function statusBadge(status) {
  return h('span', {class: `status status-${status}`}, status.replace('_', ' '));
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtTime(unix) {
  if (!unix) return '';
  const d = new Date(unix * 1000);
  const pad = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fmtDay(unix) {
  const d = new Date(unix * 1000);
  return d.toLocaleDateString(undefined, {month: 'short', day: 'numeric', timeZone: 'UTC'});
}

export function fmtNumber(v, digits = 4) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '';
  if (Number.isInteger(v)) return v.toLocaleString();
  return Number(v.toPrecision(digits)).toString();
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}
