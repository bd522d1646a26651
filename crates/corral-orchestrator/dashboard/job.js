// `/jobs/{id}`: one job. Its numbers and actions; a grid of its frames coloured (and
// marked) by state that fills in as frames are saved, with the sample progress of the
// frames rendering; thumbnails of finished frames, the latest one large; its preview
// video; and its tasks (node, attempts, times, failure, Blender's last lines).

import { api, withToken } from './api.js';
import {
  h, fill, badge, progressBar, pct, duration, timeEl, rate, elapsed, sceneName, coalesce, notice,
} from './ui.js';

/// Most frames drawn in the grid, and most thumbnails shown.
const GRID_MAX = 5000;
const THUMBS_MAX = 240;
const PAGE = 5000;
const TASK_PAGE = 500;

/// Buttons for what can be done to a job in its state. Cancelling asks twice (the second
/// press within a few seconds), so a stray click or key does not stop a night's render.
export function jobActions(job, { compact = false, onDone, onError }) {
  const wrap = h('div', { class: compact ? 'actions compact' : 'actions', role: 'group', 'aria-label': 'Job actions' });
  const act = (name, label, cls, body) => h('button', {
    type: 'button', class: cls || '', dataset: { action: name },
    'aria-label': compact ? `${label} job ${sceneName(job)}` : null,
    async onclick(e) {
      const btn = e.currentTarget;
      btn.disabled = true;
      try {
        await api(`/api/v1/jobs/${job.id}/${name}`, { method: 'POST', body });
        if (onDone) await onDone();
      } catch (err) {
        if (onError) onError(err);
      } finally {
        btn.disabled = false;
      }
    },
  }, label);
  const running = ['queued', 'running', 'paused'].includes(job.state);
  if (job.state === 'paused') wrap.append(act('resume', 'Resume'));
  else if (running) wrap.append(act('pause', 'Pause'));
  if (running) {
    const cancel = h('button', {
      type: 'button', class: 'danger', dataset: { action: 'cancel' },
      'aria-label': compact ? `Cancel job ${sceneName(job)}` : null,
    }, 'Cancel');
    let armed = null;
    const disarm = () => {
      clearTimeout(armed);
      armed = null;
      cancel.textContent = 'Cancel';
      cancel.classList.remove('armed');
    };
    cancel.addEventListener('click', async () => {
      if (!armed) {
        cancel.textContent = 'Confirm cancel';
        cancel.classList.add('armed');
        armed = setTimeout(disarm, 4000);
        return;
      }
      disarm();
      cancel.disabled = true;
      try {
        await api(`/api/v1/jobs/${job.id}/cancel`, { method: 'POST' });
        if (onDone) await onDone();
      } catch (err) {
        if (onError) onError(err);
      } finally {
        cancel.disabled = false;
      }
    });
    wrap.append(cancel);
  }
  if (job.state === 'failed' || job.state === 'cancelled') wrap.append(act('requeue', job.state === 'failed' ? 'Requeue failed' : 'Requeue'));
  if (!compact && running) {
    const input = h('input', { type: 'number', min: -1000, max: 1000, step: 1, value: job.priority, id: 'priority-input', 'aria-label': 'Priority', class: 'priority' });
    const set = h('button', {
      type: 'button', dataset: { action: 'priority' },
      async onclick() {
        try {
          await api(`/api/v1/jobs/${job.id}/priority`, { method: 'POST', body: { priority: Number(input.value) } });
          if (onDone) await onDone();
        } catch (err) { if (onError) onError(err); }
      },
    }, 'Set priority');
    wrap.append(h('span', { class: 'priority-group' }, h('label', { for: 'priority-input' }, 'Priority'), input, set));
  }
  return wrap;
}

export function mount(main, { params, live }) {
  const id = decodeURIComponent(params[0]);
  let job = null;
  let tasks = [];
  const frames = new Map(); // frame -> {node, path}
  const progress = new Map(); // frame -> {done, total}
  const cells = new Map(); // frame -> element
  let latest = null;
  let preview = null;
  let gridBuiltFor = null;

  const head = h('div', { class: 'page-head job-head' });
  const message = h('div');
  const stats = h('dl', { class: 'stats', id: 'job-stats' });
  const bar = h('div', { class: 'big-bar' });
  const legend = h('p', { class: 'legend', id: 'grid-legend', 'aria-live': 'polite' });
  const grid = h('div', { class: 'frame-grid', id: 'frame-grid', 'aria-label': 'Frames' });
  const latestBox = h('figure', { class: 'latest', id: 'latest-frame' });
  const previewBox = h('section', { class: 'panel', id: 'preview', 'aria-labelledby': 'preview-title' });
  const thumbs = h('div', { class: 'thumbs', id: 'thumbnails' });
  const taskBody = h('tbody');
  const taskNote = h('p', { class: 'muted small' });

  fill(main,
    h('p', { class: 'crumbs' }, h('a', { href: '/' }, '← Jobs')),
    head, message,
    h('div', { class: 'job-top' },
      h('section', { class: 'panel summary', 'aria-label': 'Progress' }, bar, stats),
      h('section', { class: 'panel latest-panel', 'aria-labelledby': 'latest-title' },
        h('h2', { id: 'latest-title' }, 'Latest frame'), latestBox)),
    h('section', { class: 'panel', 'aria-labelledby': 'grid-title' },
      h('div', { class: 'panel-head' }, h('h2', { id: 'grid-title' }, 'Frames'), legend),
      grid),
    previewBox,
    h('section', { class: 'panel', 'aria-labelledby': 'thumbs-title' },
      h('h2', { id: 'thumbs-title' }, 'Finished frames'), thumbs),
    h('section', { class: 'panel', 'aria-labelledby': 'tasks-title' },
      h('h2', { id: 'tasks-title' }, 'Tasks'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'tasks', id: 'tasks-table' },
        h('thead', {}, h('tr', {},
          ['#', 'Frames', 'State', 'Node', 'Attempts', 'Started', 'Finished', 'Took', 'Blender output']
            .map((t) => h('th', { scope: 'col' }, t)))),
        taskBody)),
      taskNote));

  const showError = (e) => fill(message, notice(e.message));

  // ---- the job's numbers and actions ----------------------------------------------

  // The actions are rebuilt only when what they offer changes, so a live update does not
  // undo a half-done "Cancel, Confirm cancel" or a priority being typed.
  let actions = null;
  let actionsKey = '';
  function showJob() {
    const j = job;
    document.title = `${sceneName(j)} · ${j.state} · Corral`;
    const key = `${j.state}|${j.priority}`;
    if (!actions || key !== actionsKey) {
      actions = jobActions(j, { onDone: () => refreshJob.now(), onError: showError });
      actionsKey = key;
    }
    fill(head,
      h('div', {},
        h('h1', {}, sceneName(j), ' ', badge(j.state)),
        h('p', { class: 'muted mono small' }, `job ${j.id}`)),
      actions);
    fill(bar,
      progressBar(j.frames_done, j.frames_total, j.state, 'Frames done'),
      h('p', { class: 'bar-text', id: 'frames-text' },
        h('strong', {}, `${j.frames_done} / ${j.frames_total}`), ` frames · ${pct(j.frames_done, j.frames_total)}`));
    const item = (term, ...value) => h('div', {}, h('dt', {}, term), h('dd', {}, ...value));
    fill(stats,
      item('Rate', rate(j)),
      item('ETA', j.eta_seconds !== null && j.eta_seconds !== undefined ? duration(j.eta_seconds) : '–'),
      item('Elapsed', duration(elapsed(j))),
      item('Tasks', `${j.tasks_done}/${j.tasks_total} done`,
        j.tasks_running ? ` · ${j.tasks_running} running` : '', j.tasks_failed ? ` · ${j.tasks_failed} failed` : ''),
      item('Frames', `${j.from}–${j.to} in chunks of ${j.chunk_size}`),
      item('Priority', String(j.priority)),
      item('Render', `${j.engine}${j.format ? ` · ${j.format}` : ''}`),
      item('Scene', h('span', { class: 'mono' }, j.scene || 'the nodes\' default')),
      item('Submitted', timeEl(j.submitted_at)),
      item('Started', timeEl(j.started_at)),
      item('Finished', timeEl(j.finished_at)),
      item('Output', h('span', { class: 'mono' }, j.output)));
    if (j.failure) fill(message, notice(`Failed: ${j.failure}`));
  }

  // ---- tasks ------------------------------------------------------------------------

  function showTasks() {
    fill(taskBody, tasks.map((t) => {
      const took = t.started_at && t.finished_at ? (new Date(t.finished_at) - new Date(t.started_at)) / 1000 : null;
      const tail = t.log_tail && t.log_tail.length
        ? h('details', {}, h('summary', {}, t.failure ? 'Failure and last lines' : `Last ${t.log_tail.length} lines`),
          t.failure ? h('p', { class: 'failure' }, t.failure) : null,
          h('pre', { class: 'log' }, t.log_tail.join('\n')))
        : (t.failure ? h('p', { class: 'failure' }, t.failure) : null);
      // The whole log stays on the node that rendered; the orchestrator fetches it.
      const full = t.node
        ? h('a', { href: withToken(`/api/v1/jobs/${id}/tasks/${t.index}/log`), target: '_blank', rel: 'noopener', class: 'full-log', dataset: { log: t.index } }, 'Full log')
        : null;
      const log = tail || full ? h('div', { class: 'log-links' }, tail, full) : h('span', { class: 'muted' }, '–');
      return h('tr', { dataset: { task: t.id, state: t.state } },
        h('td', { class: 'num' }, String(t.index + 1)),
        h('td', {}, t.from === t.to ? String(t.from) : `${t.from}–${t.to}`),
        h('td', {}, badge(t.state)),
        h('td', { class: 'mono small' }, t.node || '–'),
        h('td', { class: 'num' }, String(t.attempts)),
        h('td', {}, timeEl(t.started_at)),
        h('td', {}, timeEl(t.finished_at)),
        h('td', {}, took === null ? '–' : duration(took)),
        h('td', { class: 'log-cell' }, log));
    }));
    fill(taskNote, job && job.tasks_total > tasks.length ? `Showing the first ${tasks.length} of ${job.tasks_total} tasks.` : '');
  }

  // ---- the frame grid ------------------------------------------------------------

  function taskOf(frame) {
    if (!job) return null;
    const i = Math.floor((frame - job.from) / job.chunk_size);
    const t = tasks[i];
    return t && t.from <= frame && frame <= t.to ? t : tasks.find((x) => x.from <= frame && frame <= x.to) || null;
  }

  function cellState(frame) {
    if (frames.has(frame)) return ['done', 'done'];
    const t = taskOf(frame);
    if (!t) return ['queued', 'queued'];
    if (t.state === 'running') {
      if (progress.has(frame)) return ['rendering', 'rendering'];
      // Blender renders a chunk in order: its first unsaved frame is the one on the way.
      for (let f = t.from; f <= t.to; f++) {
        if (!frames.has(f)) return f === frame && !hasProgressIn(t) ? ['rendering', 'rendering'] : ['queued', 'waiting in a running chunk'];
      }
    }
    if (t.state === 'failed') return ['failed', 'failed'];
    if (t.state === 'cancelled') return ['cancelled', 'cancelled'];
    return ['queued', 'queued'];
  }

  function hasProgressIn(t) {
    for (const f of progress.keys()) if (f >= t.from && f <= t.to) return true;
    return false;
  }

  function buildGrid() {
    const last = Math.min(job.to, job.from + GRID_MAX - 1);
    grid.classList.toggle('dense', job.frames_total > 400);
    cells.clear();
    const children = [];
    for (let f = job.from; f <= last; f++) {
      const cell = h('a', { class: 'cell', dataset: { frame: f } }, h('span', { class: 'n' }, String(f)));
      cells.set(f, cell);
      children.push(cell);
    }
    fill(grid, children);
    if (job.to > last) grid.after(notice(`The grid shows the first ${GRID_MAX} frames.`, 'note'));
    gridBuiltFor = `${job.from}-${job.to}`;
  }

  function updateCell(frame) {
    const cell = cells.get(frame);
    if (!cell) return;
    const [state, text] = cellState(frame);
    const p = progress.get(frame);
    let label = `Frame ${frame}: ${text}`;
    if (state === 'rendering' && p) {
      const share = p.total ? Math.round((100 * p.done) / p.total) : 0;
      cell.style.setProperty('--p', `${share}%`);
      label += `, ${p.done} of ${p.total} samples`;
    } else {
      cell.style.removeProperty('--p');
    }
    cell.dataset.state = state;
    cell.className = `cell s-${state}`;
    cell.title = label;
    cell.setAttribute('aria-label', label);
    if (state === 'done') {
      const url = `/api/v1/jobs/${id}/frames/${frame}/image`;
      cell.setAttribute('href', url);
      cell.dataset.frameViewer = '';
      cell.dataset.title = `Frame ${frame}`;
      cell.dataset.display = displayUrl(frame);
      cell.removeAttribute('tabindex');
    } else {
      cell.removeAttribute('href');
      delete cell.dataset.frameViewer;
    }
  }

  function showLegend() {
    const counts = { done: 0, rendering: 0, queued: 0, failed: 0, cancelled: 0 };
    for (const f of cells.keys()) counts[cellState(f)[0]]++;
    fill(legend, ['done', 'rendering', 'queued', 'failed', 'cancelled']
      .filter((s) => counts[s] > 0 || ['done', 'rendering', 'queued'].includes(s))
      .map((s) => h('span', { class: `key s-${s}`, dataset: { count: s } },
        h('span', { class: 'swatch', 'aria-hidden': 'true' }), `${s[0].toUpperCase()}${s.slice(1)} ${counts[s]}`)));
  }

  function showGrid() {
    if (!job) return;
    if (gridBuiltFor !== `${job.from}-${job.to}`) buildGrid();
    for (const f of cells.keys()) updateCell(f);
    showLegend();
  }

  // ---- thumbnails and the latest frame -----------------------------------------

  /// What the viewer shows for a frame: the file itself when a browser can show it, its
  /// (tone-mapped) thumbnail otherwise (EXR, TIFF).
  function displayUrl(frame) {
    const path = (frames.get(frame) || {}).path || '';
    const what = /\.(png|jpe?g|webp|gif|bmp)$/i.test(path) ? 'image' : 'thumbnail';
    return withToken(`/api/v1/jobs/${id}/frames/${frame}/${what}`);
  }

  const thumbEls = new Map();
  function thumb(frame) {
    const src = withToken(`/api/v1/jobs/${id}/frames/${frame}/thumbnail`);
    const full = `/api/v1/jobs/${id}/frames/${frame}/image`;
    return h('a', { class: 'thumb', href: full, dataset: { frameViewer: '', title: `Frame ${frame}`, display: displayUrl(frame), thumb: frame } },
      h('img', {
        src, alt: `Frame ${frame}`, loading: 'lazy', width: 160, height: 120,
        // A frame this orchestrator cannot read (no shared frames folder) has no thumbnail.
        onerror(e) { e.currentTarget.replaceWith(h('span', { class: 'no-thumb' }, 'No thumbnail here')); },
      }),
      h('span', { class: 'thumb-n' }, String(frame)));
  }

  function showThumbs() {
    const done = [...frames.keys()].sort((a, b) => a - b);
    const shown = done.slice(-THUMBS_MAX);
    if (shown.length === 0) {
      fill(thumbs, h('p', { class: 'empty small' }, 'Frames appear here as they are saved.'));
      thumbEls.clear();
      return;
    }
    const keep = new Set(shown);
    for (const f of [...thumbEls.keys()]) if (!keep.has(f)) thumbEls.delete(f);
    const children = shown.map((f) => {
      if (!thumbEls.has(f)) thumbEls.set(f, thumb(f));
      return thumbEls.get(f);
    });
    const first = thumbs.firstElementChild;
    if (first && !first.classList.contains('thumb')) thumbs.replaceChildren();
    thumbs.replaceChildren(...children);
  }

  function showLatest() {
    if (latest === null) {
      fill(latestBox, h('div', { class: 'latest-empty' }, job && job.state === 'queued' ? 'Waiting for a node…' : 'No frame saved yet.'));
      return;
    }
    const full = `/api/v1/jobs/${id}/frames/${latest}/image`;
    const src = displayUrl(latest);
    const node = (frames.get(latest) || {}).node;
    fill(latestBox,
      h('a', { href: full, dataset: { frameViewer: '', title: `Frame ${latest}`, display: src } },
        h('img', { src, alt: `Frame ${latest}, the latest saved` })),
      h('figcaption', {}, `Frame ${latest}`, node ? h('span', { class: 'muted' }, ` · ${node}`) : null));
  }

  // ---- preview video ------------------------------------------------------------

  // Redrawn only when it changes: a re-read must not restart a video being watched.
  let previewShown = null;
  function showPreview() {
    const key = JSON.stringify(preview);
    if (key === previewShown) return;
    previewShown = key;
    const title = h('h2', { id: 'preview-title' }, 'Preview video');
    if (!preview) return fill(previewBox, title, h('p', { class: 'muted' }, '…'));
    const state = preview.state;
    const parts = [title];
    if (state === 'ready') {
      const url = withToken(preview.url);
      parts.push(h('video', { src: url, controls: true, loop: true, muted: true, playsinline: true, preload: 'metadata', class: 'preview-video' }),
        h('p', { class: 'preview-line' },
          h('a', { class: 'button', href: url, download: `corral-${id}.mp4`, id: 'preview-link' }, 'Download MP4'),
          ' ', h('span', { class: 'muted small' }, preview.note || `${preview.fps} fps`)));
    } else if (state === 'making') {
      parts.push(h('p', { class: 'muted', id: 'preview-state', dataset: { state } }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), ' Making the preview video…'));
    } else if (state === 'unavailable') {
      parts.push(h('p', { class: 'notice note', id: 'preview-state', dataset: { state } }, `No preview video: ${preview.note}`));
    } else {
      parts.push(h('p', { class: 'muted', id: 'preview-state', dataset: { state } }, `An MP4 of the frames at ${preview.fps} fps is made when the job completes.`));
    }
    fill(previewBox, parts);
  }

  // ---- loading --------------------------------------------------------------------

  async function loadJob() {
    const detail = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
    tasks = detail.tasks;
    delete detail.tasks;
    job = detail;
    if (job.tasks_total > tasks.length) {
      for (let offset = tasks.length; offset < Math.min(job.tasks_total, GRID_MAX); offset += TASK_PAGE) {
        const page = await api(`/api/v1/jobs/${id}/tasks?offset=${offset}&limit=${TASK_PAGE}`);
        tasks.push(...page.tasks);
        if (page.tasks.length < TASK_PAGE) break;
      }
    }
    // Progress of frames in tasks no longer running is over.
    for (const f of [...progress.keys()]) {
      const t = taskOf(f);
      if (!t || t.state !== 'running' || frames.has(f)) progress.delete(f);
    }
    showJob();
    showTasks();
  }

  async function loadFrames() {
    const total = Math.min(job.frames_total, GRID_MAX);
    for (let offset = 0; offset < total; offset += PAGE) {
      const page = await api(`/api/v1/jobs/${id}/frames?offset=${offset}&limit=${PAGE}`);
      for (const f of page.frames) {
        if (f.state === 'done') frames.set(f.frame, { node: f.node, path: f.path });
      }
    }
    if (frames.size) latest = latest !== null && frames.has(latest) ? latest : Math.max(...frames.keys());
  }

  async function loadPreview() {
    preview = await api(`/api/v1/jobs/${id}/preview`).catch(() => null);
    showPreview();
  }

  async function loadAll() {
    try {
      await loadJob();
      await loadFrames();
      fill(message, job.failure ? notice(`Failed: ${job.failure}`) : null);
    } catch (e) {
      if (e.status === 404) {
        fill(main, h('h1', {}, 'Job not found'), h('p', {}, `No job ${id} on this farm. `, h('a', { href: '/' }, 'All jobs')));
        stop();
        return;
      }
      showError(e);
      return;
    }
    showGrid();
    showThumbs();
    showLatest();
    await loadPreview();
  }

  const refreshJob = coalesce(async () => {
    await loadJob();
    showGrid();
    showLatest();
  }, 250);
  const refreshAll = coalesce(loadAll, 200);
  const refreshThumbs = coalesce(() => showThumbs(), 250);

  const stop = live.listen((e) => {
    if (e.kind === 'resync') return refreshAll();
    if (e.kind === 'progress' && e.job === id) {
      for (const [f] of progress) if (f !== e.frame && taskOf(f) && taskOf(f).id === e.task) progress.delete(f);
      progress.set(e.frame, { done: e.sample_done, total: e.sample_total });
      const t = taskOf(e.frame);
      if (t) for (let f = t.from; f <= t.to; f++) updateCell(f);
      return;
    }
    if (e.kind === 'frame' && e.job === id) {
      frames.set(e.frame, { node: e.node, path: e.path });
      progress.delete(e.frame);
      latest = e.frame;
      const t = taskOf(e.frame);
      if (t) for (let f = t.from; f <= t.to; f++) updateCell(f); else updateCell(e.frame);
      showLegend();
      showLatest();
      refreshThumbs();
      return;
    }
    if (e.kind === 'job' && e.id === id) {
      if (job) {
        Object.assign(job, { state: e.state, frames_done: e.frames_done });
        showJob();
      }
      refreshJob();
      if (['completed', 'failed', 'cancelled'].includes(e.state)) setTimeout(loadPreview, 300);
      return;
    }
    if (e.kind === 'task' && e.job === id) return refreshJob();
    if (e.kind === 'preview' && e.job === id) return loadPreview();
  });

  for (const p of live.progress.values()) {
    if (p.job === id) progress.set(p.frame, { done: p.sample_done, total: p.sample_total });
  }
  loadAll();
  return {
    unmount() {
      stop(); refreshJob.cancel(); refreshAll.cancel(); refreshThumbs.cancel();
      document.title = 'Corral';
    },
  };
}
