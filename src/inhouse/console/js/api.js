// The public /v1 API, called with the signed-in key: the console sees exactly what that key may see.

/** An answer outside 2xx, with OpenAI's error envelope read out. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = body && typeof body === 'object' && body.error ? body.error : {};
    super(err.message || `The server answered ${status}.`);
    this.status = status;
    this.code = err.code || null;
    this.param = err.param || null;
  }
}

// Relative to the page (/console/), so the console also works behind a proxy that mounts the server on a prefix.
export const API_BASE = new URL('../v1', document.baseURI).pathname;

export function apiUrl(path, query) {
  const url = new URL(API_BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item));
  }
  return url.toString();
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: the status says enough */ }
  return new ApiError(response.status, body);
}

export class Api {
  /** key: the API key, or null in open mode. onUnauthorized: called when a key stops working (401). */
  constructor(key, onUnauthorized = () => {}) {
    this.key = key;
    this.onUnauthorized = onUnauthorized;
  }

  headers(extra = {}) {
    const headers = new Headers(extra);
    if (this.key) headers.set('Authorization', `Bearer ${this.key}`);
    return headers;
  }

  /** The raw Response of a request (2xx only; anything else throws ApiError). */
  async raw(method, path, {query, json, body, signal, headers} = {}) {
    const init = {method, headers: this.headers(headers), signal, credentials: 'omit', cache: 'no-store'};
    if (json !== undefined) {
      init.headers.set('Content-Type', 'application/json');
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    const response = await fetch(apiUrl(path, query), init);
    if (!response.ok) {
      const err = await errorOf(response);
      if (response.status === 401 && this.key) this.onUnauthorized(err);
      throw err;
    }
    return response;
  }

  async request(method, path, options = {}) {
    const response = await this.raw(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  get(path, query, signal) { return this.request('GET', path, {query, signal}); }
  post(path, json, signal) { return this.request('POST', path, {json, signal}); }
  del(path) { return this.request('DELETE', path); }

  /** Every item of an OpenAI list, following `after` cursors; at most maxItems. */
  async all(path, query = {}, maxItems = 1000, signal = undefined) {
    const items = [];
    let after;
    for (;;) {
      const page = await this.get(path, {...query, after}, signal);
      items.push(...page.data);
      if (!page.has_more || !page.data.length || items.length >= maxItems) return items.slice(0, maxItems);
      after = page.data[page.data.length - 1].id;
    }
  }

  /** POST with a streamed answer: calls onData(parsed JSON) for each `data:` frame until [DONE]. */
  async stream(path, json, onData, signal) {
    const response = await this.raw('POST', path, {json, signal, headers: {Accept: 'text/event-stream'}});
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      // Frames end with a blank line; a frame's `data:` lines are joined (SSE's rule).
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
        const data = frame.split(/\r?\n/).filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, '')).join('\n');
        if (!data) continue;
        if (data === '[DONE]') { reader.cancel().catch(() => {}); return; }
        const parsed = JSON.parse(data);
        if (parsed.error) throw new ApiError(200, parsed);
        onData(parsed);
      }
    }
  }

  /** A multipart POST through XMLHttpRequest, for its upload progress: onProgress(sentBytes, totalBytes). */
  sendForm(path, form, onProgress = () => {}, signal = undefined) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', apiUrl(path));
      if (this.key) xhr.setRequestHeader('Authorization', `Bearer ${this.key}`);
      xhr.responseType = 'json';
      xhr.upload.addEventListener('progress', (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
      xhr.addEventListener('load', () => {
        if (xhr.status >= 200 && xhr.status < 300) { resolve(xhr.response); return; }
        const err = new ApiError(xhr.status, xhr.response);
        if (xhr.status === 401 && this.key) this.onUnauthorized(err);
        reject(err);
      });
      xhr.addEventListener('error', () => reject(new ApiError(0, {error: {message: 'The upload failed: the connection was lost.'}})));
      xhr.addEventListener('abort', () => reject(new DOMException('The upload was stopped.', 'AbortError')));
      if (signal) signal.addEventListener('abort', () => xhr.abort(), {once: true});
      xhr.send(form);
    });
  }
}

/** Whether an error is only the page being left (an aborted fetch). */
export function isAbort(err) {
  return err && err.name === 'AbortError';
}
