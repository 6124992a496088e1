// Embeddings playground: embed a few sentences and show how alike they are (cosine of the returned vectors).

import {field, fill, h, table} from '../dom.js';
import {loadModelIds, modelSelect} from './models.js';

const SAMPLE = ['A red circle above a blue square.', 'A crimson disc over an azure box.',
  'The invoice is due at the end of the month.', 'Payment must arrive before the 30th.'];
const MAX_SENTENCES = 16;

export function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i += 1) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

export async function mount(ctx) {
  const modelBox = h('div', {class: 'field'}, h('span', {class: 'muted'}, 'Loading models…'));
  const sentences = h('textarea', {name: 'sentences', rows: 6, value: SAMPLE.join('\n')});
  const go = h('button', {type: 'submit'}, 'Compare');
  const error = h('p', {class: 'error', role: 'alert'});
  const result = h('div', {'aria-live': 'polite'});
  const form = h('form', {'aria-label': 'Compare sentences'}, h('div', {class: 'row'}, modelBox),
    field('Sentences, one per line', sentences, `Up to ${MAX_SENTENCES}.`), h('div', {class: 'actions'}, go), error);
  fill(ctx.main, h('h1', {}, 'Embeddings'),
    h('p', {class: 'muted'}, 'Each cell is the cosine similarity of two sentences’ embeddings: 1 means the same direction.'),
    form, result);

  const ids = await loadModelIds(ctx);
  const model = modelSelect(ids, 'embedding');
  model.id = 'embedding-model';
  fill(modelBox, h('label', {for: model.id}, 'Model'), model);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const lines = sentences.value.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, MAX_SENTENCES);
    if (lines.length < 2) { error.textContent = 'Enter at least two sentences.'; return; }
    go.disabled = true;
    try {
      const answer = await ctx.api.post('/embeddings', {model: model.value, input: lines}, ctx.signal);
      const vectors = answer.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
      const short = (s) => (s.length > 40 ? `${s.slice(0, 39)}…` : s);
      const rows = lines.map((line, i) => h('tr', {}, h('th', {scope: 'row', title: line}, `${i + 1}. ${short(line)}`),
        vectors.map((v, j) => {
          const sim = cosine(vectors[i], v);
          const cell = h('td', {dataset: {sim: sim.toFixed(4)}}, sim.toFixed(2));
          // Shaded by similarity (through the CSSOM, which the CSP allows); the darkest shade keeps the text at
          // over 6:1 contrast.
          const t = Math.max(0, Math.min(1, sim));
          cell.style.background = `rgb(${Math.round(255 - 135 * t)}, ${Math.round(255 - 100 * t)}, ${Math.round(255 - 30 * t)})`;
          return cell;
        })));
      fill(result, h('h2', {}, 'Similarity'),
        h('p', {class: 'muted'}, `${answer.model}: ${vectors[0].length} dimensions, ${answer.usage.prompt_tokens} tokens.`),
        table(['', ...lines.map((_, i) => [`${i + 1}`, 'num'])], rows, {class: 'matrix', id: 'similarity'}));
    } catch (err) {
      error.textContent = err.message;
    } finally {
      go.disabled = false;
    }
  });
}
