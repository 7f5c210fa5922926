// The page in a real browser: Debian's Chromium, headless, driven by puppeteer-core. On a machine
// without a GPU its WebGPU adapter is SwiftShader (Chromium's CPU Vulkan), so this runs in CI.
//
// Needs: web/pkg built (scripts/web.sh build), the native binary (cargo build --release), the MNIST
// files in data/mnist. Environment: CHROMIUM (default /usr/bin/chromium), GPU_MLP (default
// target/release/gpu-mlp), KEEP=dir to keep what the test writes.
//
// Steps, each a check that fails with its reason (a missing adapter is a failure, never a pass):
//  0. without WebGPU, the page says so and what to do;
//  1. the page finds a WebGPU adapter and loads MNIST;
//  2. parity: 10 training steps (784-64-10, batch 100 on the first 1,000 images, seed 7) in the
//     page give the weights `gpu-mlp train --device gpu` gives natively from the same seed and data,
//     within the tolerance of tests/gpu_training.rs's step parity: 1e-4 + 1e-3·|native|;
//  3. the page trains 784-64-10 on 6,000 images for one epoch; its shown test accuracy ≥ 85%;
//  4. a "1" and a "7" drawn with mouse events are recognised;
//  5. a model saved by the command line (`gpu-mlp --device cpu --epochs 2 --save`), loaded through
//     the page's file input, predicts for the same drawings what `gpu-mlp predict` says for the
//     pad's PNG;
//  6. a screenshot of the page: web/screenshot.png.
import puppeteer from 'puppeteer-core';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
const binary = resolve(root, process.env.GPU_MLP || 'target/release/gpu-mlp');
const work = process.env.KEEP || mkdtempSync(join(tmpdir(), 'gpu-mlp-web-'));
const started = Date.now();

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}
const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}`);

for (const [what, path] of [['Chromium', chromium], ['gpu-mlp', binary], ['the web build', join(root, 'web/pkg/gpu_mlp_web_bg.wasm')]]) {
  if (!existsSync(path)) fail(`${what} is missing at ${path}`);
}

// A static server for the repository's root, as scripts/web.sh serves it.
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.gz': 'application/gzip' };
const server = createServer((request, response) => {
  let path = resolve(root, '.' + decodeURIComponent(new URL(request.url, 'http://x').pathname));
  if (existsSync(path) && statSync(path).isDirectory()) path = join(path, 'index.html');
  if (!path.startsWith(root + sep) || !existsSync(path)) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { 'content-type': types[extname(path)] || 'application/octet-stream' });
  response.end(readFileSync(path));
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const url = `http://127.0.0.1:${server.address().port}/web/`;

// The native runs keep their matmul tuning cache in the test's folder, never the user's.
const nativeEnv = { ...process.env, GPU_MLP_CACHE_DIR: join(work, 'tune-cache') };
const gpuMlp = (...args) =>
  execFileSync(binary, args, { cwd: root, env: nativeEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

// 0. Without WebGPU (Chromium without --enable-unsafe-webgpu offers no adapter on Linux) the
// page says so, and what to do.
{
  const plain = await puppeteer.launch({ executablePath: chromium, headless: true, args: ['--no-sandbox'] });
  try {
    const page = await plain.newPage();
    await page.goto(url);
    const outcome = await page.evaluate(() => window.gpuMlp.ready.then((a) => `an adapter: ${a}`, (e) => e.message));
    const message = await page.$eval('#nogpu', (e) => (getComputedStyle(e).display === 'none' ? '' : e.innerText));
    if (!/What to do: .*enable-unsafe-webgpu/s.test(message)) fail(`without WebGPU the page shows no advice (it found ${outcome})`);
    step(`without WebGPU the page says: ${message.split('\n').filter(Boolean).slice(0, 2).join(' / ')}`);
  } finally {
    await plain.close();
  }
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan'],
});
let exitCode = 1;
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 760 });
  page.on('console', (m) => m.type() === 'error' && console.error(`page console: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);

  // 1. The adapter and the data.
  const adapter = await page.evaluate(() => window.gpuMlp.ready).catch((e) => fail(`the page has no WebGPU adapter: ${e.message}`));
  const data = await page.$eval('#data', (e) => e.textContent);
  step(`adapter: ${adapter}; data: ${data}`);
  if (!/60,000 training and 10,000 test images/.test(data)) fail(`MNIST did not load: ${data}`);

  // 2. Parity with the native GPU path: 10 steps from the same seed and data.
  const parity = { widths: '784-64-10', batch: 100, lr: 0.1, seed: 7, train_examples: 1000, test_examples: 0 };
  const native = join(work, 'native-10-steps.safetensors');
  const nativeOut = gpuMlp('--device', 'gpu', '--layers', '784,64,10', '--batch-size', '100', '--lr', '0.1',
    '--seed', '7', '--train-examples', '1000', '--test-examples', '0', '--epochs', '1', '--save', native);
  step(`native: ${nativeOut.trim().split('\n').filter((l) => /epoch|device/.test(l)).join(' | ')}`);
  await page.evaluate((run) => window.gpuMlp.train(run), { ...parity, epochs: 0 });
  const initial = await page.evaluate(() => window.gpuMlp.parameters());
  await page.evaluate((run) => window.gpuMlp.train(run), { ...parity, epochs: 1 });
  const web = await page.evaluate(() => window.gpuMlp.parameters());
  await uploadModel(page, native);
  const nat = await page.evaluate(() => window.gpuMlp.parameters());
  if (web.length !== nat.length || web.length !== 784 * 64 + 64 + 64 * 10 + 10) fail(`parameter counts: web ${web.length}, native ${nat.length}`);
  let maxError = 0, worst = 0, moved = 0;
  for (let i = 0; i < nat.length; i++) {
    const error = Math.abs(web[i] - nat[i]);
    maxError = Math.max(maxError, error);
    worst = Math.max(worst, error / (1e-4 + 1e-3 * Math.abs(nat[i])));
    moved = Math.max(moved, Math.abs(nat[i] - initial[i]));
  }
  step(`parity, 10 steps: max |web − native| ${maxError.toExponential(2)}, worst error/tolerance ${worst.toFixed(3)}, weights moved up to ${moved.toFixed(3)}`);
  if (!(moved > 1e-2)) fail(`the weights moved by ${moved} only: the parity check would mean nothing`);
  if (!(worst <= 1)) fail(`the page's weights differ from the native GPU path's beyond 1e-4 + 1e-3·|native| (worst ratio ${worst})`);

  // 3. Train 784-64-10 on 6,000 images for one epoch, through the form, as a user would.
  await setField(page, '#widths', '784-64-10');
  await setField(page, '#epochs', '1');
  await setField(page, '#lr', '0.1');
  await setField(page, '#batch', '32');
  await setField(page, '#examples', '6000');
  await setField(page, '#seed', '1');
  await page.click('#train');
  await page.waitForFunction(() => !document.querySelector('#train').disabled && /s in all|failed/.test(document.querySelector('#log').textContent), { timeout: 600_000 });
  const log = await page.$eval('#log', (e) => e.textContent);
  step(`trained: ${log}`);
  const accuracy = Number((/test accuracy ([\d.]+)%/.exec(log) || [])[1]);
  if (!(accuracy >= 85)) fail(`the page shows a test accuracy of ${accuracy}% (< 85%): ${log}`);
  // As natively: the epoch recorded in one pass, submitted once, its metrics read back once.
  if (!/\(\d[\d,]* images\/s, 1 submit, 1 readback\)/.test(log)) fail(`an epoch in the page is not 1 submit and 1 readback: ${log}`);

  // 4. Draw a "1" and a "7".
  const drawings = {};
  for (const digit of ['1', '7']) {
    const { shown, png } = await draw(page, digit);
    step(`drew a ${digit}: the page says ${shown}`);
    if (shown !== digit) fail(`the page recognised the drawn ${digit} as ${shown}`);
    drawings[digit] = png;
  }

  // 5. A model saved by the command line, against `gpu-mlp predict` on the same drawings.
  const cliModel = join(work, 'cli.safetensors');
  gpuMlp('--device', 'cpu', '--epochs', '2', '--save', cliModel);
  await uploadModel(page, cliModel);
  step(`loaded ${await page.$eval('#model', (e) => e.textContent)}`);
  for (const digit of ['1', '7']) {
    const { shown, png, probabilities } = await draw(page, digit);
    if (Buffer.compare(png, drawings[digit]) !== 0) fail(`drawing the ${digit} again gave another image`);
    const file = join(work, `drawn-${digit}.png`);
    writeFileSync(file, png);
    const said = JSON.parse(gpuMlp('predict', '--model', cliModel, '--json', file).trim().split('\n')[0]);
    const top = said.top3.map((t) => `${t.class}: ${(100 * t.probability).toFixed(2)}% (page ${(100 * probabilities[t.class]).toFixed(2)}%)`);
    step(`the CLI model on the drawn ${digit}: page ${shown}, gpu-mlp predict ${said.predicted}; ${top.join(', ')}`);
    if (String(said.predicted) !== shown) fail(`the page predicts ${shown} for the drawn ${digit}, gpu-mlp predict ${JSON.stringify(said)}`);
    for (const t of said.top3) {
      if (!(Math.abs(probabilities[t.class] - t.probability) <= 1e-4)) fail(`class ${t.class}'s probability: page ${probabilities[t.class]}, gpu-mlp predict ${t.probability}`);
    }
  }

  // 6. The screenshot, with the CLI model's prediction of the 7 on show.
  await page.screenshot({ path: join(root, 'web/screenshot.png'), fullPage: true });
  step('saved web/screenshot.png');
  console.log('PASS');
  exitCode = 0;
} finally {
  await browser.close();
  server.close();
}
process.exit(exitCode);

async function setField(page, selector, value) {
  await page.$eval(selector, (e, v) => { e.value = v; }, value);
}

async function uploadModel(page, path) {
  const before = await page.$eval('#model', (e) => e.textContent);
  const input = await page.$('#load');
  await input.uploadFile(path);
  await page.waitForFunction((b) => document.querySelector('#model').textContent !== b, {}, before);
  const text = await page.$eval('#model', (e) => e.textContent);
  if (!text.startsWith('Model:')) fail(`loading ${path}: ${text}`);
}

// Draws `digit` on the pad with mouse events (strokes in pad pixels, 280×280) and returns the
// prediction the page shows and the pad as PNG.
async function draw(page, digit) {
  const strokes = {
    1: [[[150, 50], [140, 130], [135, 235]]],
    7: [[[80, 60], [200, 60]], [[200, 60], [165, 140], [125, 240]]],
  }[digit];
  await page.evaluate(() => window.gpuMlp.clear());
  const box = await (await page.$('#pad')).boundingBox();
  for (const stroke of strokes) {
    const [x0, y0] = stroke[0];
    await page.mouse.move(box.x + x0, box.y + y0);
    await page.mouse.down();
    for (const [x, y] of stroke.slice(1)) await page.mouse.move(box.x + x, box.y + y, { steps: 12 });
    await page.mouse.up();
  }
  const { probabilities } = await page.evaluate(() => window.gpuMlp.predict());
  const shown = await page.$eval('#digit', (e) => e.textContent);
  const png = Buffer.from(await page.evaluate(() => window.gpuMlp.drawingPng()));
  return { shown, png, probabilities };
}
