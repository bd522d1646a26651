// `/submit`: a job from a form. The scene is a path in the nodes' scenes folder (on
// `corral up`, picked from the .blend files there, whose own frame range and frame rate
// Blender reads); a problem the API answers is shown beside the field it names.

import { api } from './api.js';
import { h, fill, notice } from './ui.js';

const FIELDS = ['scene', 'from', 'to', 'chunk_size', 'priority', 'engine', 'format', 'fps'];

export function mount(main, { go }) {
  const err = Object.fromEntries(FIELDS.map((f) => [f, h('p', { class: 'field-error', id: `err-${f}`, hidden: true })]));
  const message = h('div', { id: 'submit-message' });
  const scenes = h('datalist', { id: 'scene-list' });
  const sceneHint = h('p', { class: 'hint', id: 'hint-scene' }, 'A .blend path relative to the nodes\' scenes folder. Empty: the nodes\' default scene.');
  const input = (name, attrs) => h('input', {
    id: `f-${name}`, name, 'aria-describedby': `err-${name} hint-${name}`, ...attrs,
  });
  const field = (name, label, control, hint, extra) => h('div', { class: 'field', dataset: { field: name } },
    h('label', { for: `f-${name}` }, label), control, hint || null, extra || null, err[name]);

  const scene = input('scene', { type: 'text', list: 'scene-list', placeholder: 'shots/scene.blend', autocomplete: 'off', spellcheck: 'false' });
  const uploadInput = h('input', { type: 'file', id: 'f-upload', accept: '.blend', 'aria-describedby': 'err-scene' });
  const uploadNote = h('span', { class: 'hint', id: 'upload-note', 'aria-live': 'polite' });
  const uploadRow = h('div', { class: 'upload', hidden: true },
    h('label', { for: 'f-upload' }, 'or upload a .blend'), uploadInput, uploadNote);
  const own = h('input', { type: 'radio', name: 'range', value: 'own', id: 'range-own' });
  const given = h('input', { type: 'radio', name: 'range', value: 'given', id: 'range-given', checked: true });
  const ownHint = h('span', { class: 'hint', id: 'own-hint' });
  const from = input('from', { type: 'number', min: 0, step: 1, value: 1, inputmode: 'numeric' });
  const to = input('to', { type: 'number', min: 0, step: 1, value: 24, inputmode: 'numeric' });
  const chunk = input('chunk_size', { type: 'number', min: 1, step: 1, placeholder: 'farm default', inputmode: 'numeric' });
  const priority = input('priority', { type: 'number', min: -1000, max: 1000, step: 1, value: 0, inputmode: 'numeric' });
  const fps = input('fps', { type: 'number', min: 1, max: 240, step: 'any', placeholder: '24', inputmode: 'decimal' });
  const select = (name, options) => h('select', { id: `f-${name}`, name, 'aria-describedby': `err-${name}` },
    options.map(([value, label]) => h('option', { value }, label)));
  const engine = select('engine', [['', 'The scene\'s'], ['CYCLES', 'Cycles'], ['BLENDER_EEVEE', 'EEVEE'], ['BLENDER_WORKBENCH', 'Workbench']]);
  const format = select('format', [['', 'The scene\'s'], ['PNG', 'PNG'], ['JPEG', 'JPEG'], ['OPEN_EXR', 'OpenEXR'], ['TIFF', 'TIFF']]);
  const button = h('button', { type: 'submit', class: 'primary', id: 'submit-button' }, 'Submit job');

  const form = h('form', { class: 'submit-form', id: 'submit-form', novalidate: true },
    field('scene', 'Scene', scene, sceneHint, uploadRow),
    h('fieldset', { class: 'field' },
      h('legend', {}, 'Frames'),
      h('div', { class: 'radio' }, own, h('label', { for: 'range-own' }, 'The scene\'s own range'), ownHint),
      h('div', { class: 'radio' }, given, h('label', { for: 'range-given' }, 'These frames:')),
      h('div', { class: 'row' },
        field('from', 'From', from), field('to', 'To', to))),
    h('div', { class: 'row' },
      field('chunk_size', 'Batch size', chunk, h('p', { class: 'hint', id: 'hint-chunk_size' }, 'Frames per task.')),
      field('priority', 'Priority', priority, h('p', { class: 'hint', id: 'hint-priority' }, 'Higher runs first, −1000 to 1000.'))),
    h('div', { class: 'row' },
      field('engine', 'Engine', engine), field('format', 'Format', format),
      field('fps', 'Frame rate', fps, h('p', { class: 'hint', id: 'hint-fps' }, 'For the preview video.'))),
    message,
    h('div', { class: 'actions' }, button));

  fill(main, h('div', { class: 'page-head' }, h('h1', {}, 'Submit a job')), h('section', { class: 'panel submit-panel' }, form), scenes);

  let localFarm = false;
  const setRangeInputs = () => {
    const ownRange = own.checked;
    from.disabled = ownRange;
    to.disabled = ownRange;
  };
  own.addEventListener('change', setRangeInputs);
  given.addEventListener('change', setRangeInputs);

  // On `corral up`, the farm lists its scenes and reads their ranges with Blender.
  api('/api/v1/local-farm/scenes').then((list) => {
    localFarm = true;
    fill(sceneHint, `A .blend file in ${list.folder}.`);
    fill(scenes, list.scenes.map((s) => h('option', { value: s })));
    if (list.scenes.length && !scene.value) scene.value = list.scenes[0];
    uploadRow.hidden = false;
    own.checked = true;
    setRangeInputs();
  }).catch(() => {
    own.disabled = true;
    fill(ownHint, '(read by `corral submit` or `corral up`; give the frames here)');
    setRangeInputs();
  });

  function clearErrors() {
    for (const f of FIELDS) {
      err[f].hidden = true;
      err[f].textContent = '';
      const el = document.getElementById(`f-${f}`);
      if (el) el.removeAttribute('aria-invalid');
    }
    fill(message);
  }

  function showProblem(e) {
    const f = e.field && FIELDS.includes(e.field) ? e.field : null;
    if (f) {
      err[f].hidden = false;
      err[f].textContent = e.problem.detail || e.message;
      const el = document.getElementById(`f-${f}`);
      if (el) {
        el.setAttribute('aria-invalid', 'true');
        el.disabled = false;
        el.focus();
      }
    } else {
      fill(message, notice(e.problem && e.problem.title && e.problem.detail ? `${e.problem.title}: ${e.problem.detail}` : e.message));
    }
  }

  const number = (el) => (el.value.trim() === '' ? undefined : Number(el.value));

  // An uploaded scene lands in the farm's `uploads/` folder; the form then names it.
  uploadInput.addEventListener('change', async () => {
    const file = uploadInput.files && uploadInput.files[0];
    if (!file) return;
    clearErrors();
    fill(uploadNote, `Uploading ${file.name}…`);
    button.disabled = true;
    try {
      const done = await api(`/api/v1/local-farm/scenes?name=${encodeURIComponent(file.name)}`, { method: 'POST', raw: file });
      scene.value = done.scene;
      scenes.append(h('option', { value: done.scene }));
      fill(uploadNote, `Uploaded as ${done.scene}.`);
    } catch (e) {
      fill(uploadNote);
      showProblem(Object.assign(e, { field: 'scene' }));
    } finally {
      button.disabled = false;
      uploadInput.value = '';
    }
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    button.disabled = true;
    const label = button.textContent;
    try {
      const body = {
        scene: scene.value.trim() || undefined,
        chunk_size: number(chunk),
        priority: number(priority),
        engine: engine.value || undefined,
        format: format.value || undefined,
        fps: number(fps),
      };
      if (own.checked && localFarm) {
        button.textContent = 'Reading the scene…';
        const info = await api(`/api/v1/local-farm/scene?path=${encodeURIComponent(body.scene || '')}`);
        body.from = info.from;
        body.to = info.to;
        if (body.fps === undefined && info.fps) body.fps = info.fps;
      } else {
        body.from = number(from);
        body.to = number(to);
      }
      button.textContent = 'Submitting…';
      const job = await api('/api/v1/jobs', { method: 'POST', body });
      go(`/jobs/${job.id}`);
    } catch (e) {
      showProblem(e);
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
  return { unmount() {} };
}
