// The console's entry point: sign-in (the key lives in sessionStorage only), what the key may see, and a hash
// router that mounts one page at a time into <main>.

import {Api, ApiError, isAbort} from './api.js';
import {fill, h, field} from './dom.js';
import * as batch from './pages/batch.js';
import * as batches from './pages/batches.js';
import * as chat from './pages/chat.js';
import * as embeddings from './pages/embeddings.js';
import * as files from './pages/files.js';
import * as images from './pages/images.js';
import * as job from './pages/job.js';
import * as jobs from './pages/jobs.js';
import * as keys from './pages/keys.js';
import * as usage from './pages/usage.js';

const KEY_STORE = 'inhouse.console.key';
const main = document.getElementById('main');
const nav = document.getElementById('nav');
const menu = document.getElementById('menu-toggle');
const sessionBox = document.getElementById('session');
const announcer = document.getElementById('announcer');

// [pattern on the hash path, page module, its title]. Each module exports mount(ctx), which may be async.
const ROUTES = [
  [/^\/fine-tuning$/, jobs, 'Fine-tuning'],
  [/^\/fine-tuning\/new$/, {mount: jobs.mountCreate}, 'New fine-tuning job'],
  [/^\/fine-tuning\/([\w.:-]+)$/, job, 'Fine-tuning job'],
  [/^\/batches$/, batches, 'Batches'],
  [/^\/batches\/new$/, {mount: batches.mountCreate}, 'New batch'],
  [/^\/batches\/([\w.:-]+)$/, batch, 'Batch'],
  [/^\/files$/, files, 'Files'],
  [/^\/playground\/chat$/, chat, 'Chat'],
  [/^\/playground\/embeddings$/, embeddings, 'Embeddings'],
  [/^\/playground\/images$/, images, 'Images'],
  [/^\/usage$/, usage, 'Usage'],
  [/^\/keys$/, keys, 'API keys'],
];

let session = null;   // {api, open, can: {usage, keys}}
let leave = null;     // the mounted page's cleanup

export function announce(text) {
  announcer.textContent = '';
  // A fresh text node after a tick, so screen readers speak a message even when it repeats.
  setTimeout(() => { announcer.textContent = text; }, 30);
}

function storedKey() {
  try { return sessionStorage.getItem(KEY_STORE); } catch { return null; }
}

/** 'ok' when the key (or no key) may list models; otherwise the ApiError. */
async function tryKey(key) {
  try {
    await new Api(key).get('/models');
    return 'ok';
  } catch (err) {
    return err;
  }
}

/** What this key may see beyond its own project: usage reports and key administration (absent -> hidden). */
async function capabilities(api) {
  const probe = async (path, query) => {
    try { await api.get(path, query); return true; } catch (err) {
      if (err instanceof ApiError && [401, 403, 404, 405].includes(err.status)) return false;
      return true;  // another failure (a 5xx, say): show the page; it says what went wrong
    }
  };
  const dayAgo = Math.floor(Date.now() / 1000) - 86400;
  const [canUsage, canKeys] = await Promise.all([
    probe('/organization/usage/completions', {start_time: dayAgo, limit: 1}),
    probe('/organization/projects', {limit: 1}),
  ]);
  return {usage: canUsage, keys: canKeys};
}

function signOut(message) {
  try { sessionStorage.removeItem(KEY_STORE); } catch { /* storage may be blocked */ }
  session = null;
  showSignIn(message);
}

function showSignIn(message) {
  if (leave) { leave(); leave = null; }
  nav.hidden = true;
  menu.hidden = true;
  sessionBox.replaceChildren();
  document.title = 'Sign in · Inhouse console';
  const input = h('input', {type: 'password', name: 'key', autocomplete: 'off', spellcheck: 'false', required: true,
                           placeholder: 'sk-inh-…'});
  const error = h('p', {class: 'error', role: 'alert'}, message || '');
  const button = h('button', {type: 'submit'}, 'Sign in');
  const form = h('form', {class: 'card stack', 'aria-labelledby': 'signin-title'},
    field('API key', input, 'Kept in this browser tab only (sessionStorage), and sent only to this server.'),
    h('div', {class: 'actions'}, button), error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    button.disabled = true;
    error.textContent = '';
    const result = await tryKey(key);
    button.disabled = false;
    if (result !== 'ok') {
      error.textContent = result.status === 401 ? 'This key was not accepted.' : result.message;
      input.focus();
      return;
    }
    try { sessionStorage.setItem(KEY_STORE, key); } catch { /* still signed in for this page */ }
    await start(key, false);
  });
  fill(main, h('section', {class: 'signin'}, h('h1', {id: 'signin-title'}, 'Sign in'),
    h('p', {class: 'muted'}, 'Sign in with an Inhouse API key. The console shows what that key may see.'), form));
  input.focus();
}

async function start(key, open) {
  const api = new Api(key, () => signOut('Your key stopped working (it may have been revoked). Sign in again.'));
  session = {api, open, can: await capabilities(api)};
  for (const item of nav.querySelectorAll('[data-needs]')) item.hidden = !session.can[item.dataset.needs];
  nav.hidden = false;
  menu.hidden = false;
  const who = open ? h('span', {title: 'This server has no API keys yet, so it answers only this machine.'}, 'Open mode (no key)')
                   : h('span', {}, 'Signed in with ', h('span', {class: 'mono'}, `…${key.slice(-4)}`));
  const out = open ? null : h('button', {type: 'button', class: 'secondary small', onclick: () => signOut()}, 'Sign out');
  fill(sessionBox, who, out);
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/fine-tuning');
  route();
}

function route() {
  if (!session) return;
  if (leave) { leave(); leave = null; }
  const hash = location.hash.slice(1) || '/fine-tuning';
  const [path, search] = hash.split('?');
  const query = new URLSearchParams(search || '');
  const hit = ROUTES.map(([re, page, title]) => [path.match(re), page, title]).find(([m]) => m);
  nav.classList.remove('open');
  menu.setAttribute('aria-expanded', 'false');
  const section = path.slice(1).replace(/^(fine-tuning|batches)\/.*/, '$1');
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.section === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!hit) {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', {href: '#/fine-tuning'}, 'Fine-tuning jobs')));
    return;
  }
  const [match, page, title] = hit;
  document.title = `${title} · Inhouse console`;
  const controller = new AbortController();
  const timers = [];
  const ctx = {
    api: session.api, open: session.open, can: session.can, main, query, params: match.slice(1), announce,
    signal: controller.signal,
    every(ms, fn) {  // returns a stop(), for a page that knows when there is nothing more to poll
      const t = setInterval(fn, ms);
      timers.push(t);
      return () => clearInterval(t);
    },
    later(ms, fn) { timers.push(setTimeout(fn, ms)); },
    fail(err, box) { if (!isAbort(err)) { (box || main).append(h('p', {class: 'error', role: 'alert'}, err.message)); } },
  };
  leave = () => {
    controller.abort();  // pages stop their fetches and listeners on this signal
    timers.forEach((t) => { clearInterval(t); clearTimeout(t); });
  };
  try {
    // A page draws its heading at once, then loads; a failure to load shows on the page.
    Promise.resolve(page.mount(ctx)).catch((err) => ctx.fail(err));
  } catch (err) {
    ctx.fail(err);
  }
  // Move focus to the new page's heading, so keyboard and screen-reader users start there.
  const heading = main.querySelector('h1');
  if (heading) { heading.tabIndex = -1; heading.focus({preventScroll: true}); }
}

async function boot() {
  menu.addEventListener('click', () => {
    const open = nav.classList.toggle('open');
    menu.setAttribute('aria-expanded', String(open));
  });
  document.getElementById('skip-link').addEventListener('click', (e) => {
    e.preventDefault();  // the hash belongs to the router
    main.focus();
  });
  window.addEventListener('hashchange', route);
  // Open mode (loopback, no keys exist): /v1/models answers without a key.
  if (await tryKey(null) === 'ok') {
    await start(null, true);
    return;
  }
  const saved = storedKey();
  if (saved && await tryKey(saved) === 'ok') {
    await start(saved, false);
    return;
  }
  if (saved) signOut('Your saved key stopped working. Sign in again.');
  else showSignIn();
}

boot();
