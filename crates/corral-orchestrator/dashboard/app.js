// The dashboard's entry: one page for every address (`/`, `/jobs/{id}`, `/nodes`,
// `/submit`), a router that swaps views without reloading, the live event stream every
// view listens to, the token question, and the frame viewer.

import { Live, onTokenNeeded, withToken } from './api.js';
import * as jobs from './jobs.js';
import * as job from './job.js';
import * as nodes from './nodes.js';
import * as submit from './submit.js';

const routes = [
  [/^\/(jobs\/?)?$/, jobs, 'jobs'],
  [/^\/jobs\/([^/]+)\/?$/, job, 'jobs'],
  [/^\/nodes\/?$/, nodes, 'nodes'],
  [/^\/submit\/?$/, submit, 'submit'],
];

const main = document.getElementById('main');
let view = null;

const liveText = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' };
function showLive(state) {
  const el = document.getElementById('live');
  el.dataset.state = state;
  el.querySelector('.text').textContent = liveText[state] || state;
  document.getElementById('offline').hidden = state !== 'reconnecting';
}

const live = new Live(showLive);

function render() {
  if (view && view.unmount) view.unmount();
  view = null;
  main.replaceChildren();
  const path = location.pathname;
  for (const [re, mod, nav] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    view = mod.mount(main, { params: m.slice(1), query: new URLSearchParams(location.search), live, go });
    return;
  }
  main.append(Object.assign(document.createElement('p'), { className: 'empty', textContent: 'No such page.' }));
}

/// Shows another address without reloading.
export function go(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  render();
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download') || a.origin !== location.origin) return;
  if (a.pathname.startsWith('/api/') || a.pathname.startsWith('/ui/')) return;
  e.preventDefault();
  if (a.pathname + a.search !== location.pathname + location.search) go(a.pathname + a.search);
});
window.addEventListener('popstate', render);

// The token question: a dialog that answers the entered token.
onTokenNeeded((reason) => new Promise((resolve) => {
  const dialog = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  const error = document.getElementById('token-error');
  error.hidden = !reason;
  error.textContent = reason || '';
  input.value = '';
  dialog.addEventListener('close', () => {
    resolve(input.value.trim());
    // The stream was refused too: open it again with the token.
    live.connect();
  }, { once: true });
  dialog.showModal();
  input.focus();
}));

// The frame viewer, opened by any `a[data-frame-viewer]`.
const viewer = document.getElementById('frame-dialog');
document.getElementById('frame-close').addEventListener('click', () => viewer.close());
viewer.addEventListener('click', (e) => { if (e.target === viewer) viewer.close(); });
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-frame-viewer]');
  if (!a || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  const src = a.getAttribute('href');
  const img = document.getElementById('frame-image');
  img.src = a.dataset.display || src;
  img.alt = a.dataset.title || 'Frame';
  document.getElementById('frame-title').textContent = a.dataset.title || 'Frame';
  document.getElementById('frame-open').href = withToken(src);
  viewer.showModal();
});

render();
