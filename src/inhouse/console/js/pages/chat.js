// Chat playground: any base or fine-tuned chat model, the reply streamed (SSE read from fetch's body).

import {isAbort} from '../api.js';
import {field, fill, h} from '../dom.js';
import {loadModelIds, modelSelect} from './models.js';

export async function mount(ctx) {
  const modelBox = h('div', {class: 'field'}, h('span', {class: 'muted'}, 'Loading models…'));
  const system = h('textarea', {name: 'system', rows: 2, placeholder: 'You are a helpful assistant.'});
  const temperature = h('input', {type: 'number', name: 'temperature', min: 0, max: 2, step: 0.1, value: '0.7'});
  const maxTokens = h('input', {type: 'number', name: 'max_tokens', min: 1, max: 4096, step: 1, value: '256'});
  const transcript = h('ol', {class: 'transcript', id: 'transcript', 'aria-label': 'Conversation'});
  const input = h('textarea', {name: 'message', rows: 3, placeholder: 'Type a message. Enter sends, Shift+Enter adds a line.'});
  const send = h('button', {type: 'submit'}, 'Send');
  const stop = h('button', {type: 'button', class: 'secondary', disabled: true}, 'Stop');
  const clear = h('button', {type: 'button', class: 'secondary'}, 'Clear conversation');
  const error = h('p', {class: 'error', role: 'alert'});
  const form = h('form', {'aria-label': 'Send a message'}, field('Message', input),
    h('div', {class: 'actions'}, send, stop, clear), error);

  fill(ctx.main, h('h1', {}, 'Chat'),
    h('div', {class: 'row'}, modelBox, field('Temperature', temperature), field('Max tokens', maxTokens)),
    field('System message (optional)', system), transcript, form);

  const ids = await loadModelIds(ctx);
  const model = modelSelect(ids, 'chat', ctx.query.get('model'));
  fill(modelBox, h('label', {for: 'chat-model'}, 'Model'), model);
  model.id = 'chat-model';

  let messages = [];
  let controller = null;

  const bubble = (role, text) => {
    const body = h('div', {class: 'text'}, text);
    transcript.append(h('li', {class: role}, h('div', {class: 'who'}, role), body));
    return body;
  };

  clear.addEventListener('click', () => { messages = []; transcript.replaceChildren(); input.focus(); });
  stop.addEventListener('click', () => controller && controller.abort());
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  ctx.signal.addEventListener('abort', () => controller && controller.abort());

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    error.textContent = '';
    input.value = '';
    messages.push({role: 'user', content: text});
    bubble('user', text);
    const out = bubble('assistant', '');
    out.parentElement.setAttribute('aria-busy', 'true');
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    const body = {model: model.value, stream: true, messages: [
      ...(system.value.trim() ? [{role: 'system', content: system.value.trim()}] : []), ...messages]};
    if (temperature.value !== '') body.temperature = Number(temperature.value);
    if (maxTokens.value !== '') body.max_tokens = Number(maxTokens.value);
    let reply = '';
    try {
      await ctx.api.stream('/chat/completions', body, (chunk) => {
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) { reply += delta.content; out.textContent = reply; }
      }, controller.signal);
      ctx.announce('Reply complete');
    } catch (err) {
      if (!isAbort(err)) error.textContent = err.message;
      else if (!ctx.signal.aborted) ctx.announce('Stopped');
    } finally {
      out.parentElement.removeAttribute('aria-busy');
      out.parentElement.dataset.done = 'true';
      if (reply) messages.push({role: 'assistant', content: reply});
      else out.textContent = '(no reply)';
      controller = null;
      send.disabled = false;
      stop.disabled = true;
    }
  });
}
