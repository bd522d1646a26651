// The page's one way to the orchestrator: every request goes through `api()` (and every
// media or event URL through `withToken()`), so a farm that asks for a token gets it in one
// place, asked for once per browser session.

const TOKEN_KEY = 'corral.token';

export function token() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function setToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* private mode: the token lives as long as the page */ }
}

/// A failed request, with the API's RFC 9457 problem body (`title`, `detail`, `field`).
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.field = problem.field || null;
  }
}

// Who asks the person for a token (app.js sets a dialog); one question at a time.
let askToken = null;
let asking = null;
export function onTokenNeeded(fn) { askToken = fn; }

async function tokenFromPerson(reason) {
  if (!askToken) throw new ApiError(401, { title: 'Unauthorized', detail: 'this farm needs a token' });
  if (!asking) asking = askToken(reason).finally(() => { asking = null; });
  const value = await asking;
  setToken(value);
}

/// Calls the API; answers its JSON (null for 204) or throws an ApiError. `body` is sent
/// as JSON, `raw` (a File or Blob) as it is.
export async function api(path, { method = 'GET', body, raw, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: 'application/json' };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (raw !== undefined) headers['Content-Type'] = 'application/octet-stream';
    let res;
    try {
      res = await fetch(path, {
        method, headers, signal,
        body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, { title: 'Unreachable', detail: 'the orchestrator cannot be reached' });
    }
    if (res.status === 401 && attempt < 3) {
      await tokenFromPerson(t ? 'The token was refused; enter another.' : '');
      continue;
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    if (!res.ok) throw new ApiError(res.status, json && typeof json === 'object' ? json : { title: res.statusText, detail: text.slice(0, 200) });
    return json;
  }
}

/// `url` with the session's token as a query parameter, for what cannot send headers
/// (EventSource, <img>, <video>).
export function withToken(url) {
  const t = token();
  if (!t) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(t)}`;
}

/// The event stream, shared by every view: reconnects by itself (with a growing pause),
/// and tells listeners `{kind: 'resync'}` on every (re)connection, so they re-read what
/// they show and nothing missed while away stays missing.
export class Live {
  constructor(onStatus) {
    this.listeners = new Set();
    /// The latest render progress of each running task (task id -> event), so a view
    /// opened mid-frame shows it before the next sample report.
    this.progress = new Map();
    this.onStatus = onStatus;
    this.retry = 1000;
    this.source = null;
    this.connect();
  }

  connect() {
    if (this.source) this.source.close();
    const source = new EventSource(withToken('/api/v1/events'));
    this.source = source;
    this.onStatus('connecting');
    source.onopen = () => {
      this.retry = 1000;
      this.onStatus('live');
      this.emit({ kind: 'resync' });
    };
    source.onerror = () => {
      this.onStatus('reconnecting');
      // The browser retries a dropped stream itself; one it gave up on (an error status
      // while the orchestrator restarts) is reopened here.
      if (source.readyState === EventSource.CLOSED) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.connect(), this.retry);
        this.retry = Math.min(this.retry * 2, 15000);
      }
    };
    for (const kind of ['job', 'task', 'frame', 'node', 'progress', 'preview']) {
      source.addEventListener(kind, (e) => {
        try { this.emit(JSON.parse(e.data)); } catch { /* a torn event: the next one carries fresh state */ }
      });
    }
  }

  emit(event) {
    if (event.kind === 'progress') this.progress.set(event.task, event);
    else if (event.kind === 'task' && event.state !== 'running') this.progress.delete(event.id);
    else if (event.kind === 'frame') {
      for (const [task, p] of this.progress) if (p.job === event.job && p.frame === event.frame) this.progress.delete(task);
    }
    for (const fn of this.listeners) {
      try { fn(event); } catch (e) { console.error(e); }
    }
  }

  /// Calls `fn` with every event until the returned function is called.
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
