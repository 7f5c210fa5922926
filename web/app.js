// The page: WebGPU check, MNIST download, training with a live chart, a drawing pad, model files.
// Everything numeric happens in gpu-mlp's WebAssembly (pkg/, built by scripts/web.sh): training on
// the GPU with the library's kernels, preprocessing and prediction with its code.
import init, * as gpu from './pkg/gpu_mlp_web.js';

const $ = (id) => document.getElementById(id);
const MNIST = '../data/mnist/';
const FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];

// ---------------------------------------------------------------------------------------------
// Start: WebGPU, the module, the data
// ---------------------------------------------------------------------------------------------

function noWebGpu(why) {
  $('nogpu').style.display = 'block';
  $('nogpu-why').textContent = why;
  $('adapter').textContent = 'none';
  $('adapter').className = 'error';
  $('data').textContent = 'not loaded: training needs WebGPU';
}

async function start() {
  if (!window.isSecureContext) {
    const why = `This page was opened from ${location.origin}, which is not a secure context, so the browser hides WebGPU.`;
    noWebGpu(why);
    throw new Error(why);
  }
  if (!navigator.gpu) {
    const why = 'navigator.gpu is undefined: this browser, or its settings, offer no WebGPU.';
    noWebGpu(why);
    throw new Error(why);
  }
  await init();
  let adapter;
  try {
    // wgpu's name for it (the browser often leaves the name empty: its vendor and architecture
    // say which it is).
    adapter = await gpu.adapter();
    const info = (await navigator.gpu.requestAdapter())?.info;
    const name = [info?.vendor, info?.architecture, info?.description].filter(Boolean).join(' ');
    if (name) adapter = `${name} (wgpu: ${adapter})`;
  } catch (e) {
    const why = `The browser has WebGPU but gave no adapter (${e.message}): its GPU may be blocked or disabled.`;
    noWebGpu(why);
    throw new Error(why);
  }
  $('adapter').textContent = adapter;
  const data = await loadData();
  $('train').disabled = false;
  return { adapter, data };
}

async function loadData() {
  try {
    const buffers = await Promise.all(FILES.map(async (name) => {
      const response = await fetch(`${MNIST}${name}.gz`);
      if (!response.ok) throw new Error(`${MNIST}${name}.gz: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    }));
    const summary = gpu.load_data(...buffers);
    $('data').textContent = `MNIST, ${summary}`;
    return summary;
  } catch (e) {
    $('data').textContent = `could not load MNIST: ${e.message}. Serve the repository's root (scripts/web.sh does).`;
    $('data').className = 'error';
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Training, the chart and the progress bar
// ---------------------------------------------------------------------------------------------

let history = [];

function settings() {
  return {
    widths: $('widths').value.trim(),
    epochs: Number($('epochs').value),
    lr: Number($('lr').value),
    batch: Number($('batch').value),
    train_examples: Number($('examples').value),
    seed: Number($('seed').value),
  };
}

async function train(run) {
  history = [];
  drawChart(run.epochs);
  $('progress').value = 0;
  $('progress').max = run.epochs || 1;
  for (const id of ['train', 'save', 'loadbtn']) $(id).disabled = true;
  $('log').className = '';
  $('log').textContent = `training ${run.widths} on the GPU: epoch 1 of ${run.epochs}…`;
  const started = performance.now();
  try {
    const last = JSON.parse(await gpu.train(JSON.stringify(run), (text) => {
      const report = JSON.parse(text);
      history.push(report);
      $('progress').value = report.epoch;
      drawChart(run.epochs);
      const next = report.epoch < report.epochs ? ` — epoch ${report.epoch + 1} of ${report.epochs}…` : '';
      $('log').textContent = describe(report) + next;
    }));
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    if (last) $('log').textContent = `${describe(last)}; ${seconds} s in all`;
    $('model').textContent = `Model: ${run.widths} trained here, ${run.epochs} epoch${run.epochs === 1 ? '' : 's'}.`;
    $('save').disabled = false;
    predictDrawing();
    return last;
  } catch (e) {
    $('log').textContent = `training failed: ${e.message}`;
    $('log').className = 'error';
    throw e;
  } finally {
    $('train').disabled = false;
    $('loadbtn').disabled = false;
  }
}

const percent = (x) => `${(100 * x).toFixed(2)}%`;

function describe(r) {
  let text = `epoch ${r.epoch}/${r.epochs}: loss ${r.train_loss.toFixed(4)}, train accuracy ${percent(r.train_accuracy)}`;
  if (r.test_accuracy != null) text += `, test accuracy ${percent(r.test_accuracy)}`;
  return `${text} (${Math.round(r.samples_per_second).toLocaleString('en')} images/s, ${r.submits} submit, ${r.readbacks} readback)`;
}

function drawChart(epochs) {
  const canvas = $('chart');
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 48, t: 26, b: 28 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const n = Math.max(epochs, 1);
  // Each batch's mean loss, at its place in the run (epoch e's batch b of n at e − 1 + (b + 1)/n),
  // smoothed over 10 batches; the epochs' figures as dots on lines.
  const curve = [];
  for (const r of history) {
    const n = r.batch_loss.length, first = r.batches - n;
    let window = [];
    r.batch_loss.forEach((loss, i) => {
      window.push(loss);
      if (window.length > 10) window.shift();
      curve.push([r.epoch - 1 + (first + i + 1) / r.batches, window.reduce((a, b) => a + b, 0) / window.length]);
    });
  }
  const maxLoss = Math.max(0.5, ...curve.map(([, l]) => l), ...history.map((r) => r.train_loss)) * 1.1;
  const x = (epoch) => pad.l + (pw * epoch) / n;
  const yLoss = (v) => pad.t + ph * (1 - v / maxLoss);
  const yAcc = (v) => pad.t + ph * (1 - v);
  g.font = '11px system-ui, sans-serif';
  g.strokeStyle = '#d8dce3';
  g.fillStyle = '#5b6475';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ph * i) / 4;
    g.beginPath(); g.moveTo(pad.l, y); g.lineTo(pad.l + pw, y); g.stroke();
    g.textAlign = 'right'; g.fillText((maxLoss * (1 - i / 4)).toFixed(2), pad.l - 6, y + 4);
    g.textAlign = 'left'; g.fillText(`${100 - 25 * i}%`, pad.l + pw + 6, y + 4);
  }
  g.textAlign = 'center';
  const step = Math.ceil(n / 10);
  for (let e = 0; e <= n; e += step) g.fillText(String(e), x(e), h - 10);
  g.fillText('epoch', pad.l + pw / 2, h - 0.5);
  const series = [
    { key: 'train_loss', y: yLoss, color: '#e0702b', label: 'training loss (each batch; each epoch)' },
    { key: 'train_accuracy', y: yAcc, color: '#8fb3ee', label: 'training accuracy' },
    { key: 'test_accuracy', y: yAcc, color: '#2f6fdb', label: 'test accuracy' },
  ];
  g.strokeStyle = 'rgba(224, 112, 43, 0.45)';
  g.lineWidth = 1.25;
  g.beginPath();
  curve.forEach(([e, l], i) => (i ? g.lineTo(x(e), yLoss(l)) : g.moveTo(x(e), yLoss(l))));
  g.stroke();
  let legendX = pad.l + 8;
  for (const s of series) {
    const points = history.filter((r) => r[s.key] != null).map((r) => [x(r.epoch), s.y(r[s.key])]);
    g.strokeStyle = g.fillStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    points.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    g.stroke();
    for (const [px, py] of points) { g.beginPath(); g.arc(px, py, 3, 0, 2 * Math.PI); g.fill(); }
    g.fillRect(legendX, 6, 14, 3);
    g.fillStyle = '#1d2330';
    g.textAlign = 'left';
    g.fillText(s.label, legendX + 18, 11);
    legendX += g.measureText(s.label).width + 34;
  }
}

// ---------------------------------------------------------------------------------------------
// The drawing pad and the prediction
// ---------------------------------------------------------------------------------------------

const pad = $('pad');
const pen = pad.getContext('2d');

function clearPad() {
  pen.fillStyle = '#fff';
  pen.fillRect(0, 0, pad.width, pad.height);
  $('digit').textContent = '–';
  showBars(null);
  $('input28').getContext('2d').clearRect(0, 0, 28, 28);
  drawn = false;
}

let drawing = false, drawn = false, last = null;

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener('pointerdown', (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  stroke(last, last);
});
pad.addEventListener('pointermove', (event) => {
  if (!drawing) return;
  const p = point(event);
  stroke(last, p);
  last = p;
});
for (const end of ['pointerup', 'pointercancel']) {
  pad.addEventListener(end, () => {
    if (!drawing) return;
    drawing = false;
    predictDrawing();
  });
}

function stroke(from, to) {
  pen.strokeStyle = '#000';
  pen.lineWidth = 20;
  pen.lineCap = pen.lineJoin = 'round';
  pen.beginPath();
  pen.moveTo(...from);
  pen.lineTo(...to);
  pen.stroke();
  drawn = true;
}

// The pad as a PNG file: what `gpu-mlp predict` would be given.
function drawingPng() {
  return new Promise((resolve) => pad.toBlob(async (blob) => resolve(new Uint8Array(await blob.arrayBuffer())), 'image/png'));
}

let predicting = Promise.resolve(null);

function predictDrawing() {
  predicting = predicting.then(async () => {
    if (!drawn || !$('save').dataset.ready) return null;
    try {
      const result = JSON.parse(gpu.predict(await drawingPng()));
      $('digit').textContent = String(result.digit);
      showBars(result.probabilities);
      showInput(result.pixels);
      return result;
    } catch (e) {
      $('digit').textContent = '?';
      showBars(null);
      $('model').textContent = e.message;
      return null;
    }
  });
  return predicting;
}

function showBars(probabilities) {
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  $('bars').innerHTML = '';
  for (let d = 0; d < 10; d++) {
    const p = probabilities ? probabilities[d] : 0;
    $('bars').insertAdjacentHTML('beforeend',
      `<span>${d}</span><div class="bar${d === best ? ' top' : ''}"><div style="width:${(100 * p).toFixed(1)}%"></div></div>` +
      `<span class="muted">${probabilities ? (100 * p).toFixed(1) + '%' : ''}</span>`);
  }
}

function showInput(pixels) {
  const image = new ImageData(28, 28);
  pixels.forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  $('input28').getContext('2d').putImageData(image, 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Model files
// ---------------------------------------------------------------------------------------------

function modelReady(text) {
  $('save').dataset.ready = '1';
  if (text) $('model').textContent = `Model: ${text}.`;
}

$('save').addEventListener('click', () => {
  const bytes = gpu.save_model();
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
  link.download = `gpu-mlp-${settings().widths}.safetensors`;
  link.click();
  URL.revokeObjectURL(link.href);
});

$('loadbtn').addEventListener('click', () => $('load').click());
$('load').addEventListener('change', async () => {
  const file = $('load').files[0];
  if (!file) return;
  try {
    modelReady(gpu.load_model(new Uint8Array(await file.arrayBuffer()), file.name));
    $('save').disabled = false;
    await predictDrawing();
  } catch (e) {
    $('model').textContent = `could not load ${file.name}: ${e.message}`;
  } finally {
    $('load').value = '';
  }
});

$('train').addEventListener('click', async () => {
  await train(settings()).catch(() => {});
  modelReady();
});
$('clear').addEventListener('click', clearPad);

clearPad();
drawChart(Number($('epochs').value));
const ready = start();
ready.catch((e) => console.error(e.message));

// Hooks for the browser test (web/test): the same calls the buttons make, plus the parameters.
window.gpuMlp = {
  ready: ready.then(() => $('adapter').textContent),
  async train(run) {
    const last = await train(run);
    modelReady();
    return last;
  },
  parameters: () => Array.from(gpu.parameters()),
  clear: clearPad,
  async predict() { return predictDrawing(); },
  async drawingPng() { return Array.from(await drawingPng()); },
};
