// `/nodes`: every render node with its state (idle, rendering, down, draining), the chunk
// it renders and how far, its slots, cores, memory, Blender version, when it was last
// seen and the frames it rendered; drain and enable.

import { api } from './api.js';
import { h, fill, badge, bytes, ago, coalesce, notice, sceneName, shortId } from './ui.js';

/// A node's state as people name it.
export function nodeState(n) {
  if (n.state === 'down') return 'down';
  if (n.draining) return 'draining';
  return n.running_tasks.length > 0 ? 'rendering' : 'idle';
}

export function mount(main, { live }) {
  const message = h('div');
  const list = h('div', { class: 'nodes', id: 'nodes' });
  const summary = h('p', { class: 'muted' });
  let nodes = [];
  let taskInfo = new Map(); // task id -> {job, from, to}
  const progress = new Map(); // node id -> {job, frame, done, total}

  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Nodes'), summary), message, list);
  const showError = (e) => fill(message, notice(e.message));

  function chunk(n) {
    if (n.running_tasks.length === 0) return h('span', { class: 'muted' }, n.state === 'down' ? '–' : 'Waiting for work');
    return n.running_tasks.map((tid) => {
      const t = taskInfo.get(tid);
      const p = progress.get(n.id);
      if (!t) return h('div', {}, `task ${tid}`);
      const share = p && p.total ? Math.round((100 * p.done) / p.total) : null;
      return h('div', { class: 'chunk' },
        h('a', { href: `/jobs/${t.job.id}` }, sceneName(t.job)), ' ',
        h('span', { class: 'muted small mono' }, shortId(t.job.id)),
        h('div', { class: 'small' }, `frames ${t.from}–${t.to}`,
          p && p.job === t.job.id ? ` · frame ${p.frame}, ${p.done}/${p.total} samples (${share}%)` : ''));
    });
  }

  function card(n) {
    const state = nodeState(n);
    const busy = n.running_tasks.length;
    const fact = (term, value) => h('div', {}, h('dt', {}, term), h('dd', {}, value));
    const toggle = h('button', {
      type: 'button', dataset: { action: n.draining ? 'enable' : 'drain' },
      async onclick(e) {
        e.currentTarget.disabled = true;
        try {
          await api(`/api/v1/nodes/${encodeURIComponent(n.id)}/${n.draining ? 'enable' : 'drain'}`, { method: 'POST' });
          await refresh.now();
        } catch (err) { showError(err); }
      },
    }, n.draining ? 'Enable' : 'Drain');
    return h('article', { class: `node s-${state}`, dataset: { node: n.id, state }, 'aria-labelledby': `node-${n.id}` },
      h('header', {},
        h('h2', { id: `node-${n.id}` }, n.hostname || n.url),
        badge(state),
        h('span', { class: 'spacer' }),
        toggle),
      h('p', { class: 'muted small mono' }, n.url),
      h('div', { class: 'current' }, h('span', { class: 'label' }, 'Current chunk'), chunk(n)),
      h('dl', { class: 'facts' },
        fact('Slots', `${busy}/${n.slots} busy`),
        fact('Cores', n.cores ? String(n.cores) : '–'),
        fact('Memory', bytes(n.memory_bytes)),
        fact('Blender', h('span', { class: 'blender-version' }, n.blender_version || '–')),
        fact('Last seen', h('span', { dataset: { seen: n.last_seen || '' } }, ago(n.last_seen))),
        fact('Frames rendered', String(n.frames_rendered))));
  }

  function show() {
    if (nodes.length === 0) {
      fill(list, h('p', { class: 'empty' }, 'No render nodes yet. Start one with ', h('code', {}, 'corral node --orchestrator URL'), '.'));
    } else {
      fill(list, nodes.map(card));
    }
    const count = (s) => nodes.filter((n) => nodeState(n) === s).length;
    fill(summary, `${nodes.length} nodes · ${count('rendering')} rendering · ${count('idle')} idle · ${count('draining')} draining · ${count('down')} down`);
  }

  async function load() {
    nodes = await api('/api/v1/nodes');
    // Which job and frames each running task is: from the running jobs' tasks.
    const wanted = new Set(nodes.flatMap((n) => n.running_tasks));
    const info = new Map();
    if (wanted.size) {
      const page = await api('/api/v1/jobs?state=running&limit=50');
      const details = await Promise.all(page.jobs.map((j) => api(`/api/v1/jobs/${j.id}`).catch(() => null)));
      for (const d of details) {
        if (!d) continue;
        for (const t of d.tasks) if (wanted.has(t.id)) info.set(t.id, { job: d, from: t.from, to: t.to });
      }
    }
    taskInfo = info;
    fill(message);
    show();
  }

  const refresh = coalesce(() => load().catch(showError), 300);
  const stop = live.listen((e) => {
    if (e.kind === 'resync' || e.kind === 'node' || e.kind === 'task') return refresh();
    if (e.kind === 'progress') {
      progress.set(e.node, { job: e.job, frame: e.frame, done: e.sample_done, total: e.sample_total });
      const n = nodes.find((x) => x.id === e.node);
      const el = n && list.querySelector(`[data-node="${CSS.escape(n.id)}"] .current`);
      if (el) fill(el, h('span', { class: 'label' }, 'Current chunk'), chunk(n));
    }
  });
  // "Last seen" moves with every probe, which sends no event (only changes do): keep the
  // words true by re-reading the nodes now and then while this page is open.
  const tick = setInterval(() => refresh(), 10000);
  for (const p of live.progress.values()) {
    progress.set(p.node, { job: p.job, frame: p.frame, done: p.sample_done, total: p.sample_total });
  }
  load().catch(showError);
  return { unmount() { stop(); refresh.cancel(); clearInterval(tick); } };
}
