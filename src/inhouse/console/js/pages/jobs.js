// Fine-tuning: the jobs list (refreshed while any job is active) and the form that creates a job.

import {ApiError} from '../api.js';
import {field, fill, fmtTime, h, select, statusBadge, table} from '../dom.js';
import {chooseModel} from './models.js';

const ACTIVE = ['validating_files', 'queued', 'running'];
const PAGE = 20;

export async function mount(ctx) {
  const box = h('div', {}, h('p', {class: 'muted'}, 'Loading jobs…'));
  const more = h('button', {type: 'button', class: 'secondary', hidden: true}, 'Show more');
  fill(ctx.main, h('div', {class: 'row title-row'}, h('h1', {}, 'Fine-tuning jobs'),
    h('a', {class: 'button', href: '#/fine-tuning/new'}, 'New job')), box, h('div', {class: 'actions'}, more));
  let jobs = [];
  let hasMore = false;

  const render = () => {
    if (!jobs.length) {
      fill(box, h('p', {}, 'No fine-tuning jobs yet. ', h('a', {href: '#/fine-tuning/new'}, 'Create one'),
        ' from an uploaded training file.'));
    } else {
      fill(box, table(['Job', 'Base model', 'Status', 'Fine-tuned model', 'Created'], jobs.map((j) => h('tr', {},
        h('td', {}, h('a', {href: `#/fine-tuning/${j.id}`, class: 'mono'}, j.id)),
        h('td', {}, j.model), h('td', {}, statusBadge(j.status)),
        h('td', {class: 'mono'}, j.fine_tuned_model || '—'), h('td', {}, fmtTime(j.created_at))))));
    }
    more.hidden = !hasMore;
  };

  const load = async (after) => {
    const page = await ctx.api.get('/fine_tuning/jobs', {limit: PAGE, after}, ctx.signal);
    jobs = after ? [...jobs, ...page.data] : page.data;
    hasMore = page.has_more;
    render();
  };
  more.addEventListener('click', () => load(jobs[jobs.length - 1].id).catch((e) => ctx.fail(e, box)));
  await load();
  // While a job is moving, keep the first page fresh (the rows already shown are replaced, nothing reloads).
  ctx.every(3000, async () => {
    if (!jobs.some((j) => ACTIVE.includes(j.status))) return;
    try {
      const page = await ctx.api.get('/fine_tuning/jobs', {limit: Math.min(100, Math.max(PAGE, jobs.length))}, ctx.signal);
      // Redrawn only when something changed, so keyboard focus on a link stays put.
      if (JSON.stringify(page.data) === JSON.stringify(jobs)) return;
      jobs = page.data;
      hasMore = page.has_more;
      render();
    } catch { /* the next tick tries again */ }
  });
}

function numberInput(name, props) {
  return h('input', {type: 'number', name, placeholder: 'auto', inputmode: 'decimal', ...props});
}

export async function mountCreate(ctx) {
  const error = h('p', {class: 'error', role: 'alert'});
  const form = h('form', {class: 'card', 'aria-labelledby': 'new-job-title'}, h('p', {class: 'muted'}, 'Loading…'));
  fill(ctx.main, h('h1', {id: 'new-job-title'}, 'New fine-tuning job'), form);
  const [models, trainingFiles] = await Promise.all([
    ctx.api.get('/models', undefined, ctx.signal),
    ctx.api.all('/files', {purpose: 'fine-tune', limit: 100}, 500, ctx.signal),
  ]);
  const ids = models.data.map((m) => m.id);
  const model = select(ids, ctx.query.get('model') || chooseModel(ids, 'chat'), {name: 'model'});
  const fileOptions = trainingFiles.map((f) => [f.id, `${f.filename} (${f.id})`]);
  const training = select(fileOptions, ctx.query.get('training_file') || undefined, {name: 'training_file', required: true});
  const validation = select([['', 'None'], ...fileOptions], '', {name: 'validation_file'});
  const method = select([['supervised', 'Supervised (examples to imitate)'], ['dpo', 'DPO (preferred and rejected answers)']],
    'supervised', {name: 'method'});
  const suffix = h('input', {type: 'text', name: 'suffix', maxlength: 64, placeholder: 'my-model'});
  const epochs = numberInput('n_epochs', {min: 1, max: 50, step: 1});
  const batch = numberInput('batch_size', {min: 1, max: 256, step: 1});
  const lr = numberInput('learning_rate_multiplier', {min: 0, step: 'any'});
  const beta = numberInput('beta', {min: 0, max: 2, step: 'any'});
  const betaField = field('DPO beta', beta, 'Blank: auto (0.1).');
  const submit = h('button', {type: 'submit', disabled: !fileOptions.length}, 'Create job');
  const syncMethod = () => { betaField.hidden = method.value !== 'dpo'; };
  method.addEventListener('change', syncMethod);
  syncMethod();

  fill(form,
    fileOptions.length ? null : h('p', {class: 'notice'}, 'No file with purpose “fine-tune” yet: ',
      h('a', {href: '#/files'}, 'upload a training file'), ' first.'),
    h('div', {class: 'grid-2'},
      field('Base model', model, 'A chat model or the embedding model, or one of your fine-tuned models.'),
      field('Method', method),
      field('Training file', training, 'JSONL with purpose “fine-tune”.'),
      field('Validation file', validation, 'Optional; its loss is reported as the job trains.'),
      field('Suffix', suffix, 'Up to 64 characters, part of the new model’s name.')),
    h('h2', {}, 'Hyperparameters'),
    h('p', {class: 'muted'}, 'Leave a field blank to let the server choose for your data (auto).'),
    h('div', {class: 'row'}, field('Epochs', epochs), field('Batch size', batch),
      field('Learning rate multiplier', lr), betaField),
    h('div', {class: 'actions'}, submit, h('a', {href: '#/fine-tuning', class: 'button secondary'}, 'Cancel')),
    error);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const hp = {};
    for (const [input, key] of [[epochs, 'n_epochs'], [batch, 'batch_size'], [lr, 'learning_rate_multiplier'],
      [beta, 'beta']]) {
      if (key === 'beta' && method.value !== 'dpo') continue;
      if (input.value.trim() !== '') hp[key] = Number(input.value);  // the server says what is out of range
    }
    const body = {model: model.value, training_file: training.value,
                  method: {type: method.value, [method.value]: {hyperparameters: hp}}};
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    submit.disabled = true;
    try {
      const job = await ctx.api.post('/fine_tuning/jobs', body);
      ctx.announce(`Created job ${job.id}`);
      location.hash = `#/fine-tuning/${job.id}`;
    } catch (err) {
      error.textContent = err instanceof ApiError && err.param ? `${err.message} (${err.param})` : err.message;
      submit.disabled = false;
    }
  });
}
