// Model pickers for the playgrounds. /v1/models does not say what kind a model is, so the likely kind is
// guessed from its name (OpenAI's aliases, common model names); every model stays selectable.

import {h} from '../dom.js';

const PREFERRED = {
  chat: ['gpt-4o-mini', 'gpt-4.1-mini', 'gpt-3.5-turbo'],
  embedding: ['text-embedding-3-small', 'text-embedding-ada-002', 'text-embedding-3-large'],
  image: ['dall-e-2', 'gpt-image-1', 'dall-e-3'],
};
const PATTERNS = {
  image: /dall-e|gpt-image|image|diffusion|(^|[^a-z])sd([^a-z]|$)|scenes/i,
  embedding: /embed|minilm|mpnet|bge|e5-|gte|encoder|sentence/i,
};

export function guessKind(id) {
  const name = id.startsWith('ft:') ? id.split(':')[1] : id;
  if (PATTERNS.image.test(name)) return 'image';
  if (PATTERNS.embedding.test(name)) return 'embedding';
  return 'chat';
}

export function chooseModel(ids, kind) {
  return PREFERRED[kind].find((m) => ids.includes(m)) || ids.find((m) => guessKind(m) === kind) || ids[0];
}

/** A <select> of every model, the likely ones for `kind` first; `wanted` (if listed) is selected. */
export function modelSelect(ids, kind, wanted) {
  const chosen = wanted && ids.includes(wanted) ? wanted : chooseModel(ids, kind);
  const likely = ids.filter((m) => guessKind(m) === kind);
  const other = ids.filter((m) => guessKind(m) !== kind);
  const option = (m) => h('option', {value: m, selected: m === chosen}, m);
  const label = {chat: 'Chat models', embedding: 'Embedding models', image: 'Image models'}[kind];
  return h('select', {name: 'model'},
    likely.length ? h('optgroup', {label}, likely.map(option)) : null,
    other.length ? h('optgroup', {label: 'Other models'}, other.map(option)) : null);
}

export async function loadModelIds(ctx) {
  const list = await ctx.api.get('/models', undefined, ctx.signal);
  return list.data.map((m) => m.id);
}
