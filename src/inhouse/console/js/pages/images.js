// Images playground: generate from a prompt, and edit a picture where a brush painted the mask. OpenAI's mask
// rule: a PNG of the picture's size whose fully transparent pixels mark where to edit, so the painted strokes
// are cut out of an opaque mask.

import {field, fill, h, select} from '../dom.js';
import {loadModelIds, modelSelect} from './models.js';

const SIZES = ['256x256', '512x512', '1024x1024'];

function dataUrl(b64) {
  return `data:image/png;base64,${b64}`;
}

function loadImage(src) {
  const img = new Image();
  img.src = src;
  return img.decode().then(() => img);
}

function toBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
}

/** The mask for an overlay of brush strokes: opaque everywhere, fully transparent wherever the brush went. */
export function maskFrom(strokes) {
  const mask = document.createElement('canvas');
  mask.width = strokes.width;
  mask.height = strokes.height;
  const m = mask.getContext('2d');
  m.fillStyle = '#000';
  m.fillRect(0, 0, mask.width, mask.height);
  m.globalCompositeOperation = 'destination-out';
  m.drawImage(strokes, 0, 0);
  return mask;
}

/** A picture on a canvas with a paint layer over it: pointer (mouse, pen, touch) or keyboard brush. */
function painter(onPaint) {
  const base = h('canvas', {width: 256, height: 256, 'aria-hidden': 'true'});
  const overlay = h('canvas', {width: 256, height: 256, class: 'overlay', tabindex: '0', role: 'img', id: 'mask-canvas',
    'aria-label': 'Mask. Paint where the picture should change: drag with the pointer, or move the brush with ' +
      'the arrow keys and press Space to paint (Shift+arrows paints as it moves).'});
  const cursor = h('div', {class: 'cursor', hidden: true});
  const size = h('input', {type: 'range', min: 4, max: 128, value: 32, name: 'brush'});
  const wrap = h('div', {class: 'painter'}, base, overlay, cursor);
  const ink = overlay.getContext('2d');
  let last = null;
  let at = {x: 128, y: 128};

  const scale = () => overlay.getBoundingClientRect().width / overlay.width || 1;
  const dab = (from, to) => {
    ink.strokeStyle = '#e11d48';
    ink.fillStyle = '#e11d48';
    ink.lineCap = 'round';
    ink.lineWidth = Number(size.value);
    ink.beginPath();
    ink.moveTo(from.x, from.y);
    ink.lineTo(to.x + 0.01, to.y);
    ink.stroke();
    onPaint();
  };
  const point = (e) => {
    const r = overlay.getBoundingClientRect();
    return {x: ((e.clientX - r.left) * overlay.width) / r.width, y: ((e.clientY - r.top) * overlay.height) / r.height};
  };
  const placeCursor = () => {
    const s = scale();
    const d = Number(size.value) * s;
    cursor.style.left = `${at.x * s}px`;
    cursor.style.top = `${at.y * s}px`;
    cursor.style.width = `${d}px`;
    cursor.style.height = `${d}px`;
  };
  overlay.addEventListener('pointerdown', (e) => {
    overlay.setPointerCapture(e.pointerId);
    last = point(e);
    dab(last, last);
  });
  overlay.addEventListener('pointermove', (e) => {
    if (!last) return;
    const p = point(e);
    dab(last, p);
    last = p;
  });
  for (const type of ['pointerup', 'pointercancel']) overlay.addEventListener(type, () => { last = null; });
  overlay.addEventListener('focus', () => { cursor.hidden = false; placeCursor(); });
  overlay.addEventListener('blur', () => { cursor.hidden = true; });
  overlay.addEventListener('keydown', (e) => {
    const step = Math.max(4, Number(size.value) / 2);
    const moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
    if (moves[e.key]) {
      e.preventDefault();
      const from = at;
      at = {x: Math.min(overlay.width, Math.max(0, at.x + moves[e.key][0])),
            y: Math.min(overlay.height, Math.max(0, at.y + moves[e.key][1]))};
      if (e.shiftKey) dab(from, at);
      placeCursor();
    } else if (e.key === ' ' || e.key === 'Enter') {
      e.preventDefault();
      dab(at, at);
    }
  });
  size.addEventListener('input', placeCursor);

  return {
    wrap, size, overlay,
    async load(src) {
      const img = await loadImage(src);
      for (const c of [base, overlay]) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
      base.getContext('2d').drawImage(img, 0, 0);
      at = {x: base.width / 2, y: base.height / 2};
      return img;
    },
    clear() { ink.clearRect(0, 0, overlay.width, overlay.height); },
    picture: () => toBlob(base),
    mask: () => toBlob(maskFrom(overlay)),
    dimensions: () => [base.width, base.height],
  };
}

function gallery(box, data, onEdit) {
  fill(box, data.map((d, i) => {
    const src = dataUrl(d.b64_json);
    return h('figure', {},
      h('img', {src, alt: `Result ${i + 1}`, class: 'result'}),
      h('figcaption', {class: 'actions'},
        h('button', {type: 'button', class: 'small secondary', onclick: () => onEdit(src)}, 'Edit this image'),
        h('a', {href: src, download: `image-${i + 1}.png`, class: 'button small secondary'}, 'Download')));
  }));
}

export async function mount(ctx) {
  const genModelBox = h('div', {class: 'field'}, h('span', {class: 'muted'}, 'Loading models…'));
  const prompt = h('textarea', {name: 'prompt', rows: 2, value: 'a red circle above a blue square'});
  const genSize = select(SIZES, '256x256', {name: 'size'});
  const generate = h('button', {type: 'submit'}, 'Generate');
  const genError = h('p', {class: 'error', role: 'alert'});
  const generated = h('div', {class: 'images', id: 'generated', 'aria-live': 'polite'});
  const genForm = h('form', {'aria-label': 'Generate an image'}, field('Prompt', prompt),
    h('div', {class: 'row'}, genModelBox, field('Size', genSize)), h('div', {class: 'actions'}, generate), genError);

  const p = painter(() => { edit.disabled = false; });
  const source = h('input', {type: 'file', accept: 'image/png,image/jpeg,image/webp', name: 'picture'});
  const editModelBox = h('div', {class: 'field'});
  const editPrompt = h('textarea', {name: 'edit-prompt', rows: 2, value: 'a yellow star'});
  const editSize = select(SIZES, '256x256', {name: 'edit-size'});
  const clear = h('button', {type: 'button', class: 'secondary', onclick: () => { p.clear(); edit.disabled = true; }},
    'Clear mask');
  const edit = h('button', {type: 'submit', disabled: true}, 'Edit');
  const editError = h('p', {class: 'error', role: 'alert'});
  const edited = h('div', {class: 'images', id: 'edited', 'aria-live': 'polite'});
  const stage = h('div', {hidden: true}, p.wrap, h('div', {class: 'row'}, field('Brush size', p.size), clear));
  const editForm = h('form', {'aria-label': 'Edit an image'},
    field('Picture', source, 'PNG, JPEG or WebP; or choose “Edit this image” under a generated one.'), stage,
    field('What to paint in the masked area', editPrompt),
    h('div', {class: 'row'}, editModelBox, field('Size', editSize)), h('div', {class: 'actions'}, edit), editError);
  const editSection = h('section', {'aria-labelledby': 'edit-h'}, h('h2', {id: 'edit-h'}, 'Edit with a mask'),
    editForm, edited);

  fill(ctx.main, h('h1', {}, 'Images'),
    h('section', {'aria-labelledby': 'gen-h'}, h('h2', {id: 'gen-h'}, 'Generate'), genForm, generated), editSection);

  const ids = await loadModelIds(ctx);
  const genModel = modelSelect(ids, 'image');
  genModel.id = 'gen-model';
  fill(genModelBox, h('label', {for: genModel.id}, 'Model'), genModel);
  const editModel = modelSelect(ids, 'image');
  editModel.id = 'edit-model';
  fill(editModelBox, h('label', {for: editModel.id}, 'Model'), editModel);

  const startEditing = async (src) => {
    editError.textContent = '';
    try {
      await p.load(src);
    } catch {
      editError.textContent = 'That file could not be read as a picture.';
      return;
    }
    stage.hidden = false;
    edit.disabled = true;
    const [w, hgt] = p.dimensions();
    if (w === hgt && SIZES.includes(`${w}x${hgt}`)) editSize.value = `${w}x${hgt}`;
    editSection.scrollIntoView({block: 'start'});
    p.overlay.focus({preventScroll: true});
  };

  source.addEventListener('change', () => {
    const file = source.files[0];
    if (!file) return;
    const url = URL.createObjectURL(file);
    startEditing(url).finally(() => URL.revokeObjectURL(url));
  });

  genForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    genError.textContent = '';
    generate.disabled = true;
    fill(generated, h('p', {class: 'muted'}, 'Generating…'));
    try {
      const answer = await ctx.api.post('/images/generations', {model: genModel.value, prompt: prompt.value,
        size: genSize.value, n: 1, response_format: 'b64_json'}, ctx.signal);
      gallery(generated, answer.data, startEditing);
      ctx.announce('Image ready');
    } catch (err) {
      generated.replaceChildren();
      genError.textContent = err.message;
    } finally {
      generate.disabled = false;
    }
  });

  editForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    editError.textContent = '';
    edit.disabled = true;
    fill(edited, h('p', {class: 'muted'}, 'Editing…'));
    try {
      const form = new FormData();
      form.append('model', editModel.value);
      form.append('prompt', editPrompt.value);
      form.append('size', editSize.value);
      form.append('n', '1');
      form.append('response_format', 'b64_json');
      form.append('image', await p.picture(), 'image.png');
      form.append('mask', await p.mask(), 'mask.png');
      const answer = await ctx.api.sendForm('/images/edits', form, undefined, ctx.signal);
      gallery(edited, answer.data, startEditing);
      ctx.announce('Edited image ready');
    } catch (err) {
      edited.replaceChildren();
      editError.textContent = err.message;
    } finally {
      edit.disabled = false;
    }
  });
}
