// Small pieces every view uses: building elements, formatting times, sizes and rates,
// state badges (text and colour), progress bars, and a coalescing refresh.

/// `h('a', {href: '/'}, 'text', child)`; attributes starting with `on` become listeners,
/// `class`, `dataset` and `style` are set as such; null children are skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') el.style.cssText = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/// Replaces an element's children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const STATE_TEXT = {
  queued: 'Queued', running: 'Running', paused: 'Paused', completed: 'Completed',
  failed: 'Failed', cancelled: 'Cancelled', rendering: 'Rendering', idle: 'Idle',
  down: 'Down', draining: 'Draining', done: 'Done', pending: 'Queued', up: 'Up',
};

/// A state as a badge: a word and a colour, never colour alone.
export function badge(state) {
  return h('span', { class: `badge s-${state}`, dataset: { state } }, STATE_TEXT[state] || state);
}

/// A progress bar with its numbers as text beside it.
export function progressBar(done, total, state, label) {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return h('div', {
    class: `bar s-${state}`, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': total,
    'aria-valuenow': done, 'aria-label': label || 'Frames done',
  }, h('span', { class: 'fill', style: `width:${pct.toFixed(2)}%` }));
}

export function pct(done, total) {
  return total > 0 ? `${Math.floor((100 * done) / total)}%` : '0%';
}

/// `0:42`, `12:05`, `2:03:09`.
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, '0');
  return hh > 0 ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

/// A time as people read it: `14:03:22` today, `3 Mar 14:03` before.
export function time(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '–';
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (d.toDateString() === now.toDateString()) return hm;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`;
}

/// A <time> element with the full date as its tooltip.
export function timeEl(iso) {
  if (!iso) return h('span', { class: 'muted' }, '–');
  return h('time', { datetime: iso, title: new Date(iso).toLocaleString() }, time(iso));
}

/// `just now`, `12 s ago`, `4 min ago`.
export function ago(iso) {
  if (!iso) return 'never';
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 3) return 'just now';
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 86400 * 2) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function bytes(n) {
  if (!n && n !== 0) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/// Seconds a job has been rendering (to its end, or now).
export function elapsed(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return Math.max(0, (end - new Date(job.started_at)) / 1000);
}

/// `2.4 frames/s` or `6.1 s/frame`, from frames done over time rendering.
export function rate(job) {
  const s = elapsed(job);
  if (!s || !job.frames_done) return '–';
  const r = job.frames_done / s;
  return r >= 1 ? `${r.toFixed(1)} frames/s` : `${(1 / r).toFixed(1)} s/frame`;
}

/// The last part of a scene path, or the nodes' default scene.
export function sceneName(job) {
  if (!job.scene) return 'default scene';
  const parts = job.scene.split('/');
  return parts[parts.length - 1];
}

export function shortId(id) {
  return String(id).slice(-8);
}

/// Runs `fn` at most once per `ms`, soon after the first call of a burst: many events
/// become one re-read.
export function coalesce(fn, ms = 300) {
  let timer = null, running = false, again = false;
  const run = async () => {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    try { await fn(); } catch (e) { console.error(e); } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  };
  const schedule = () => { if (!timer) timer = setTimeout(run, ms); };
  schedule.now = () => { clearTimeout(timer); timer = null; return run(); };
  schedule.cancel = () => { clearTimeout(timer); timer = null; };
  return schedule;
}

/// A message line for errors and notes, announced to screen readers.
export function notice(text, kind = 'error') {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}
