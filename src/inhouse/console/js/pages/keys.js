// API keys (admins only): keys per project with their rate limits; create (the value is shown once) and revoke.

import {ApiError} from '../api.js';
import {field, fill, fmtNumber, fmtTime, h, select, table} from '../dom.js';

export async function mount(ctx) {
  const box = h('div', {}, h('p', {class: 'muted'}, 'Loading projects…'));
  fill(ctx.main, h('h1', {}, 'API keys'), box);
  let projects;
  try {
    projects = await ctx.api.all('/organization/projects', {limit: 100}, 500, ctx.signal);
  } catch (err) {
    if (err instanceof ApiError && [403, 404].includes(err.status)) {
      fill(box, h('p', {class: 'notice'}, 'Only an admin key may manage keys.'));
      return;
    }
    throw err;
  }
  if (!projects.length) { fill(box, h('p', {class: 'muted'}, 'No projects yet.')); return; }

  const project = select(projects.map((p) => [p.id, `${p.name} (${p.id})`]), ctx.query.get('project') || projects[0].id,
    {name: 'project'});
  const list = h('div', {});
  const created = h('div', {'aria-live': 'polite'});
  const name = h('input', {type: 'text', name: 'name', required: true, maxlength: 100, placeholder: 'ci'});
  const rpm = h('input', {type: 'number', name: 'rpm', min: 1, step: 1, placeholder: 'no limit'});
  const tpm = h('input', {type: 'number', name: 'tpm', min: 1, step: 1, placeholder: 'no limit'});
  const error = h('p', {class: 'error', role: 'alert'});
  const form = h('form', {class: 'card', 'aria-labelledby': 'create-key-h'}, h('h2', {id: 'create-key-h'}, 'Create a key'),
    h('div', {class: 'row'}, field('Name', name), field('Requests per minute', rpm), field('Tokens per minute', tpm)),
    h('div', {class: 'actions'}, h('button', {type: 'submit'}, 'Create key')), error);
  fill(box, h('div', {class: 'row'}, field('Project', project)), list, created, form);

  const load = async () => {
    const keys = await ctx.api.all(`/organization/projects/${project.value}/api_keys`, {limit: 100}, 1000, ctx.signal);
    const limit = (k, which) => (k.rate_limits && k.rate_limits[which] ? fmtNumber(k.rate_limits[which]) : 'no limit');
    fill(list, keys.length ? table(['Name', 'Key', 'Created', 'Last used', ['Requests/min', 'num'], ['Tokens/min', 'num'], 'Actions'],
      keys.map((k) => h('tr', {},
        h('td', {}, k.name || '—', k.admin ? [' ', h('span', {class: 'status'}, 'admin')] : null),
        h('td', {class: 'mono'}, k.redacted_value || k.id),
        h('td', {}, fmtTime(k.created_at)), h('td', {}, k.last_used_at ? fmtTime(k.last_used_at) : 'never'),
        h('td', {class: 'num'}, limit(k, 'rpm')), h('td', {class: 'num'}, limit(k, 'tpm')),
        h('td', {}, h('button', {type: 'button', class: 'small danger', 'aria-label': `Revoke ${k.name || k.id}`,
          onclick: () => revoke(k)}, 'Revoke')))), {id: 'keys-table'})
      : h('p', {class: 'muted'}, 'No keys in this project.'));
  };

  const revoke = async (k) => {
    if (!window.confirm(`Revoke ${k.name || k.id}? Programs using it stop working within seconds.`)) return;
    try {
      await ctx.api.del(`/organization/projects/${project.value}/api_keys/${k.id}`);
      ctx.announce(`Revoked ${k.name || k.id}`);
      await load();
    } catch (err) {
      error.textContent = err.message;
    }
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const body = {name: name.value.trim()};
    if (rpm.value) body.rpm = Number(rpm.value);
    if (tpm.value) body.tpm = Number(tpm.value);
    try {
      const key = await ctx.api.post(`/organization/projects/${project.value}/api_keys`, body);
      const value = h('input', {type: 'text', readonly: true, value: key.value, class: 'mono', id: 'new-key-value', size: 60});
      const copy = h('button', {type: 'button', class: 'secondary', onclick: async () => {
        try { await navigator.clipboard.writeText(key.value); ctx.announce('Copied'); } catch { value.select(); }
      }}, 'Copy');
      fill(created, h('div', {class: 'success'}, h('p', {}, h('strong', {}, `Key “${key.name}” created. `),
        'Copy it now: it is shown only once.'), h('div', {class: 'row'}, field('New key', value), copy)));
      value.select();
      name.value = rpm.value = tpm.value = '';
      await load();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  project.addEventListener('change', () => { created.replaceChildren(); load().catch((err) => ctx.fail(err, list)); });
  await load();
}
