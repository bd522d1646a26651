// `/`: the farm at a glance (nodes busy, jobs by state) and the jobs, newest first, with
// their progress, rate, ETA and times; filtered by state (`/?state=running`), with the
// common actions on each row. Job events move the bars at once; a coalesced re-read
// brings the rest.

import { api } from './api.js';
import {
  h, fill, badge, progressBar, pct, duration, timeEl, rate, sceneName, shortId, coalesce, notice,
} from './ui.js';
import { jobActions } from './job.js';

const STATES = ['running', 'queued', 'paused', 'completed', 'failed', 'cancelled'];
const LIMIT = 100;

export function mount(main, { query, live, go }) {
  const filter = STATES.includes(query.get('state')) ? query.get('state') : '';
  const farm = h('section', { class: 'farm', 'aria-label': 'Farm' });
  const message = h('div');
  const body = h('tbody');
  const more = h('p', { class: 'muted small' });
  let jobs = new Map();

  const filters = h('nav', { class: 'filters', 'aria-label': 'Filter jobs by state' },
    [['', 'All'], ...STATES.map((s) => [s, s[0].toUpperCase() + s.slice(1)])].map(([s, label]) =>
      h('a', { href: s ? `/?state=${s}` : '/', 'aria-current': s === filter ? 'true' : null, dataset: { filter: s || 'all' } }, label)));

  fill(main,
    h('div', { class: 'page-head' },
      h('h1', {}, 'Jobs'),
      h('a', { class: 'button primary', href: '/submit' }, '+ Submit job')),
    farm,
    filters,
    message,
    h('div', { class: 'table-wrap' },
      h('table', { class: 'jobs', id: 'jobs-table' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Job'),
          h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col', class: 'progress-col' }, 'Progress'),
          h('th', { scope: 'col' }, 'Rate'),
          h('th', { scope: 'col' }, 'ETA'),
          h('th', { scope: 'col', class: 'num' }, 'Priority'),
          h('th', { scope: 'col' }, 'Submitted'),
          h('th', { scope: 'col' }, 'Started'),
          h('th', { scope: 'col' }, 'Finished'),
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
        body)),
    more);

  // Each row's buttons, kept while the job's state is the same, so a re-read does not undo
  // a half-done "Cancel, Confirm cancel".
  const actions = new Map();
  function actionsFor(j) {
    const kept = actions.get(j.id);
    if (kept && kept.state === j.state) return kept.el;
    const el = jobActions(j, { compact: true, onDone: refresh.now, onError: showError });
    actions.set(j.id, { state: j.state, el });
    return el;
  }

  function row(j) {
    const tr = h('tr', { dataset: { job: j.id, state: j.state } },
      h('th', { scope: 'row', class: 'job-name' },
        h('a', { href: `/jobs/${j.id}` }, sceneName(j)),
        h('span', { class: 'muted mono small' }, ` ${shortId(j.id)} · ${j.from}–${j.to}`)),
      h('td', { 'data-label': 'State' }, badge(j.state)),
      h('td', { class: 'progress-col', 'data-label': 'Progress' },
        progressBar(j.frames_done, j.frames_total, j.state, `Frames done of ${sceneName(j)}`),
        h('span', { class: 'frames small', dataset: { frames: '' } },
          `${j.frames_done}/${j.frames_total} frames · ${pct(j.frames_done, j.frames_total)}`)),
      h('td', { 'data-label': 'Rate' }, rate(j)),
      h('td', { 'data-label': 'ETA' }, j.eta_seconds !== null && j.eta_seconds !== undefined ? duration(j.eta_seconds) : '–'),
      h('td', { class: 'num', 'data-label': 'Priority' }, String(j.priority)),
      h('td', { 'data-label': 'Submitted' }, timeEl(j.submitted_at)),
      h('td', { 'data-label': 'Started' }, timeEl(j.started_at)),
      h('td', { 'data-label': 'Finished' }, timeEl(j.finished_at)),
      h('td', { class: 'row-actions' }, actionsFor(j)));
    return tr;
  }

  function showError(e) {
    fill(message, notice(e.message));
  }

  async function load() {
    const q = new URLSearchParams({ limit: String(LIMIT) });
    if (filter) q.set('state', filter);
    const [page, nodes] = await Promise.all([
      api(`/api/v1/jobs?${q}`),
      api('/api/v1/nodes').catch(() => null),
    ]);
    fill(message);
    jobs = new Map(page.jobs.map((j) => [j.id, j]));
    if (page.jobs.length === 0) {
      fill(body, h('tr', {}, h('td', { colspan: 10, class: 'empty' },
        filter ? `No ${filter} jobs.` : 'No jobs yet. ', filter ? null : h('a', { href: '/submit' }, 'Submit the first one.'))));
    } else {
      fill(body, page.jobs.map(row));
    }
    fill(more, page.total > page.jobs.length ? `Showing the newest ${page.jobs.length} of ${page.total} jobs.` : '');
    if (nodes) showFarm(nodes, page);
  }

  function showFarm(nodes, page) {
    const up = nodes.filter((n) => n.state === 'up');
    const busy = up.filter((n) => n.running_tasks.length > 0).length;
    const slots = up.reduce((a, n) => a + n.slots, 0);
    const running = page.jobs.filter((j) => j.state === 'running').length;
    const queued = page.jobs.filter((j) => j.state === 'queued').length;
    const stat = (value, label, href) => h('a', { class: 'stat', href },
      h('span', { class: 'value' }, value), h('span', { class: 'label' }, label));
    fill(farm,
      stat(`${busy}/${up.length}`, 'nodes rendering', '/nodes'),
      stat(String(slots), 'slots up', '/nodes'),
      stat(String(nodes.length - up.length), 'nodes down', '/nodes'),
      stat(String(running), 'jobs running', '/?state=running'),
      stat(String(queued), 'jobs queued', '/?state=queued'));
  }

  const refresh = coalesce(() => load().catch(showError), 400);
  const refreshSoon = coalesce(() => load().catch(showError), 1500);

  // A job event carries its frames and state: the bar moves now, the rest follows.
  const stop = live.listen((e) => {
    if (e.kind === 'resync') return refresh();
    if (e.kind === 'node') return refreshSoon();
    if (e.kind !== 'job') return;
    const j = jobs.get(e.id);
    if (!j) return refresh();
    const stateChanged = j.state !== e.state;
    Object.assign(j, { state: e.state, frames_done: e.frames_done, frames_total: e.frames_total });
    const tr = body.querySelector(`tr[data-job="${e.id}"]`);
    if (tr && stateChanged) tr.replaceWith(row(j));
    else if (tr) {
      // Only the numbers move: the row's buttons (a half-done cancel) stay as they are.
      const cell = tr.querySelector('.progress-col');
      fill(cell,
        progressBar(j.frames_done, j.frames_total, j.state, `Frames done of ${sceneName(j)}`),
        h('span', { class: 'frames small', dataset: { frames: '' } },
          `${j.frames_done}/${j.frames_total} frames · ${pct(j.frames_done, j.frames_total)}`));
    }
    if (stateChanged) refresh(); else refreshSoon();
  });
  load().catch(showError);
  return { unmount() { stop(); refresh.cancel(); refreshSoon.cancel(); } };
}
