// Browser test of the web console: Debian's chromium driven by playwright-core
// against a real `hadm serve` with the tiny golden models. Run by
// tests/test_console.sh, which checks the prerequisites and passes:
//   HADM_BIN, HADM_GOLDEN_DIR, CHROMIUM, ARTIFACTS (screenshots go there).
// Prints one "ok"/"FAIL" line per check and "N passed, N failed" at the end.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { deflateSync, crc32 } from 'node:zlib';
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';

const BIN = process.env.HADM_BIN;
const GOLDEN = process.env.HADM_GOLDEN_DIR;
const ARTIFACTS = process.env.ARTIFACTS;
const MODEL_L = join(GOLDEN, 'tiny-local/model.safetensors');
const MODEL_G = join(GOLDEN, 'tiny-global/model.safetensors');
const IMAGE = join(GOLDEN, 'tiny-global/landscape_640x427.jpg');
const IMAGE2 = join(GOLDEN, 'tiny-local/test6.jpeg');
const RIGHT_KEY = 'console-test-key-7f3a';
const WRONG_KEY = 'console-test-key-7f3b';

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log('ok   ' + name); }
  else { failed++; console.log('FAIL ' + name + (detail ? ' (' + detail + ')' : '')); }
}
function expectEq(name, want, got) { check(name, want === got, 'got ' + JSON.stringify(got) + ', expected ' + JSON.stringify(want)); }

const tmp = mkdtempSync(join(tmpdir(), 'hadm-console-'));
let server = null;

async function startServer(extra = [], env = {}) {
  const portFile = join(tmp, 'port');
  rmSync(portFile, { force: true });
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', '--port-file', portFile,
    '--local', MODEL_L, '--global', MODEL_G, ...extra];
  const proc = spawn(BIN, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((r) => proc.on('exit', r));
  for (let i = 0; i < 600 && !(existsSync(portFile) && readFileSync(portFile, 'utf8').trim()); i++) {
    if (proc.exitCode !== null) throw new Error('server exited: ' + log.slice(-500));
    await sleep(50);
  }
  const url = 'http://127.0.0.1:' + readFileSync(portFile, 'utf8').trim();
  for (let i = 0; i < 600; i++) { // the default start-up loads in the background
    const r = await fetch(url + '/ready').catch(() => null);
    if (r && r.status === 200) break;
    await sleep(50);
  }
  server = { proc, url, exited, log: () => log };
  return url;
}

async function stopServer() {
  if (!server) return;
  server.proc.kill('SIGTERM');
  const code = await Promise.race([server.exited, sleep(60000).then(() => 'timeout')]);
  if (code === 'timeout') server.proc.kill('SIGKILL');
  writeFileSync(join(ARTIFACTS, 'server-' + Date.now() + '.log'), server.log());
  server = null;
  return code;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* What the API itself answers for the image: the reference the page must match. */
async function apiDetect(url, path, key) {
  const fd = new FormData();
  fd.append('file', new Blob([readFileSync(path)], { type: 'image/jpeg' }), 'img.jpg');
  const r = await fetch(url + '/api/v1/detect?mode=both', { method: 'POST', body: fd, headers: key ? { 'X-API-Key': key } : {} });
  if (r.status !== 200) throw new Error('API detect answered ' + r.status);
  const d = await r.json();
  return [...d.local_detections, ...d.global_detections];
}

async function modelState(url, name, key) {
  const r = await fetch(url + '/models/status', { headers: key ? { 'X-API-Key': key } : {} });
  return (await r.json()).models[name].state;
}

/* A PNG of random pixels, stored without compression: a big upload
 * (width*height*3 bytes) that every decoder reads quickly. */
function bigPng(path, width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
  const raw = randomFillSync(Buffer.alloc((width * 3 + 1) * height));
  for (let y = 0; y < height; y++) raw[y * (width * 3 + 1)] = 0; // filter: none
  writeFileSync(path, Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 0 })), chunk('IEND', Buffer.alloc(0))]));
}

let shot = 0;
async function screenshot(page, name, fullPage = false) {
  shot++;
  const file = join(ARTIFACTS, String(shot).padStart(2, '0') + '-' + name + '.png');
  await page.screenshot({ path: file, fullPage });
}

/* Waits until fn() is truthy (polling), up to ms; returns its last value. */
async function waitFor(fn, ms = 15000) {
  let v;
  for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(100)) if ((v = await fn())) return v;
  return v;
}

async function uploadAndDetect(page, image) {
  const before = await page.locator('#results .result').count();
  await page.setInputFiles('#files', image);
  await page.click('#run');
  await page.waitForFunction((n) => document.querySelectorAll('#results .result').length > n, before, { timeout: 60000 });
  return page.locator('#results .result').last();
}

/* The three files: types, ETag revalidation, cache policy. */
async function assetHeaders(url) {
  const types = { '/': 'text/html; charset=utf-8', '/console.css': 'text/css; charset=utf-8',
    '/console.js': 'text/javascript; charset=utf-8' };
  for (const [path, type] of Object.entries(types)) {
    const r = await fetch(url + path);
    const body = await r.text();
    const etag = r.headers.get('etag');
    check(path + ': 200, ' + type + ', ETag, no-cache', r.status === 200 && r.headers.get('content-type') === type &&
      /^"[0-9a-f]{20}"$/.test(etag || '') && r.headers.get('cache-control') === 'private, no-cache' && body.length > 1000,
      [r.status, r.headers.get('content-type'), etag, r.headers.get('cache-control')].join(' '));
    const again = await fetch(url + path, { headers: { 'If-None-Match': etag } });
    check(path + ': If-None-Match with its ETag -> 304, empty', again.status === 304 && (await again.text()) === '');
    const other = await fetch(url + path, { headers: { 'If-None-Match': '"0000"' } });
    expectEq(path + ': another ETag -> 200', 200, other.status);
  }
}

async function consoleWithoutKey(browser) {
  const url = await startServer();
  await assetHeaders(url);
  const expected = await apiDetect(url, IMAGE);
  check('the API finds detections in the golden image (' + expected.length + ')', expected.length > 0);

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const resp = await page.goto(url + '/');
  expectEq('GET / answers 200', 200, resp.status());
  expectEq('page title', 'hadm console', await page.title());
  const css = await page.evaluate(() => getComputedStyle(document.querySelector('.top')).display);
  expectEq('console.css applied', 'flex', css);
  await page.waitForFunction(() => document.querySelector('tr[data-model="hadm-l"] .state')?.textContent === 'ready');
  check('models panel shows HADM-L ready', true);
  await screenshot(page, 'loaded');

  // upload, boxes, table
  await page.fill('#min-score', '0');
  const card = await uploadAndDetect(page, IMAGE);
  const boxes = await card.locator('svg.boxes g.box').count();
  expectEq('boxes drawn = detections the API returns', expected.length, boxes);
  expectEq('table rows = detections the API returns', expected.length, await card.locator('table.detections tbody tr').count());
  const pageClasses = (await card.locator('table.detections tbody tr td:nth-child(3)').allTextContents()).sort();
  expectEq('table class names = API class names', JSON.stringify(expected.map((d) => d.class_name).sort()), JSON.stringify(pageClasses));
  const first = expected[0]; // drawn first: the local list comes first, as in the API
  const rect = await card.locator('svg.boxes g.box[data-n="1"] rect').evaluate((r) => ['x', 'y', 'width', 'height'].map((a) => +r.getAttribute(a)));
  const [x1, y1, x2, y2] = first.bbox;
  check('first box sits where the API says', Math.abs(rect[0] - x1) < 1e-3 && Math.abs(rect[1] - y1) < 1e-3 &&
    Math.abs(rect[2] - (x2 - x1)) < 1e-3 && Math.abs(rect[3] - (y2 - y1)) < 1e-3, JSON.stringify([rect, first.bbox]));
  await card.locator('svg.boxes g.box[data-n="1"]').focus(); // keyboard focus shows class and score
  const tip = await card.locator('.tip').textContent();
  check('focusing a box shows its class and score', tip.includes(first.class_name) && tip.includes(first.confidence.toFixed(3)), tip);
  const top = card.locator('svg.boxes g.box').last(); // drawn last: the smallest, on top of any other
  await top.hover();
  expectEq('hovering a box shows its class and score', await top.getAttribute('aria-label'), await card.locator('.tip').textContent());
  await screenshot(page, 'detected', true);

  // the minimum score hides weaker boxes, client-side
  const cut = 0.06;
  await page.fill('#min-score', String(cut));
  const strong = expected.filter((d) => d.confidence >= cut).length;
  check('the cut keeps some boxes and hides some', strong > 0 && strong < expected.length);
  expectEq('min score ' + cut + ': boxes = API detections scoring >= ' + cut, strong, await card.locator('svg.boxes g.box').count());
  await page.fill('#min-score', '0');

  // download JSON holds the API's answer
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  const saved = JSON.parse(readFileSync(await download.path(), 'utf8'));
  expectEq('downloaded JSON has the detections', expected.length,
    saved[0].result.local_detections.length + saved[0].result.global_detections.length);

  // a file that is not an image: the server's 415 in plain words
  const fake = join(tmp, 'notes.jpg');
  writeFileSync(fake, 'this is not an image\n');
  const bad = await uploadAndDetect(page, fake);
  const msg = await bad.locator('.error').textContent();
  check('a non-image gets a plain-words error', msg.includes('not an image'), msg);

  // a 30 MB image goes through, with the progress shown while it works
  const big = join(tmp, 'big-30mb.png');
  bigPng(big, 4000, 2560);
  await page.evaluate(() => {
    window.progressSeen = [];
    new MutationObserver(() => window.progressSeen.push(document.querySelector('#progress-text').textContent))
      .observe(document.querySelector('#progress-text'), { childList: true, characterData: true, subtree: true });
  });
  const bigCard = await uploadAndDetect(page, big);
  const seen = await page.evaluate(() => window.progressSeen);
  check('progress told "sending" then "the server is detecting"', seen.some((t) => t.includes('sending')) &&
    seen.some((t) => t.includes('the server is detecting')), JSON.stringify(seen));
  const bigSummary = await bigCard.locator('.summary').textContent();
  check('a ' + (readFileSync(big).length / 1048576).toFixed(1) + ' MB image is detected', bigSummary.startsWith('4000×2560 px'), bigSummary);
  expectEq('progress says done', 'Done: 1 image.', await page.locator('#progress-text').textContent());
  await screenshot(page, 'big-image');

  // drag and drop: a dropped file becomes the chosen image
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped.jpg', { type: 'image/jpeg' }));
    document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, readFileSync(IMAGE).toString('base64'));
  check('a dropped image is chosen', (await page.locator('#chosen').textContent()).startsWith('1 image chosen'));

  // several images at once: one result each, in order
  const cards = await page.locator('#results .result').count();
  await page.setInputFiles('#files', [IMAGE2, IMAGE]);
  await page.click('#run');
  await page.waitForFunction((n) => document.querySelectorAll('#results .result').length === n + 2 &&
    !document.querySelector('#run').disabled, cards, { timeout: 60000 });
  expectEq('two images picked: two results, in order', JSON.stringify(['test6.jpeg', 'landscape_640x427.jpg']),
    JSON.stringify((await page.locator('#results .result h3').allTextContents()).slice(-2)));
  expectEq('... the second with as many boxes as the API', expected.length,
    await page.locator('#results .result').last().locator('svg.boxes g.box').count());

  // live figures from /metrics (polled every 3 s)
  const latency = await waitFor(async () => {
    const t = await page.locator('#live-latency').textContent();
    return / s /.test(t + ' ') && t;
  }, 10000);
  check('live detect latency shown from /metrics', !!latency, String(latency));
  check('live queue depth is a number', /^\d+$/.test(await page.locator('#live-queue').textContent()));

  // models panel: unload and load HADM-L
  await page.getByRole('button', { name: 'Unload HADM-L (local)', exact: true }).click();
  await page.waitForFunction(() => document.querySelector('tr[data-model="hadm-l"] .state')?.textContent === 'unloaded');
  expectEq('unload from the panel: the server says unloaded', 'unloaded', await modelState(url, 'hadm-l'));
  check('Load button enabled after the unload', await page.getByRole('button', { name: 'Load HADM-L (local)', exact: true }).isEnabled());
  await screenshot(page, 'unloaded');
  await page.getByRole('button', { name: 'Load HADM-L (local)', exact: true }).click();
  await page.waitForFunction(() => document.querySelector('tr[data-model="hadm-l"] .state')?.textContent === 'ready', null, { timeout: 30000 });
  expectEq('load from the panel: the server says ready', 'ready', await modelState(url, 'hadm-l'));
  const loadTime = await page.locator('tr[data-model="hadm-l"] .load-time').textContent();
  check('panel shows a load time', /^last load took \d+\.\d+ m?s$/.test(loadTime), loadTime);
  const panel = await page.locator('#models-table').evaluate((t) => [t.parentElement.scrollWidth, t.parentElement.clientWidth]);
  check('models panel fits its column', panel[0] <= panel[1], JSON.stringify(panel));
  await screenshot(page, 'reloaded');

  // phone width: nothing wider than the screen
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check('phone width (390 px): no horizontal scrolling', overflow <= 390, 'scrollWidth ' + overflow);
  await screenshot(page, 'phone');
  expectEq('no script errors on the page', '[]', JSON.stringify(errors));
  await page.close();
  expectEq('server stops with exit 0', 0, await stopServer());
  return expected;
}

async function consoleWithKey(browser) {
  // --lazy with a slowed load: the first detect waits for the models, as on a slow server
  const url = await startServer(['--api-key', RIGHT_KEY, '--lazy'], { HADM_TEST_LOAD_DELAY_MS: '3000' });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } }); // fresh sessionStorage
  const page = await context.newPage();
  for (const path of ['/console.js', '/console.css']) {
    const r = await fetch(url + path);
    check('with a key set, ' + path + ' without it -> JSON 401', r.status === 401 && (await r.json()).success === false);
  }
  const plain = await fetch(url + '/', { headers: { Accept: 'application/json' } });
  check('with a key set, GET / for a non-browser -> JSON 401', plain.status === 401 && (await plain.json()).success === false);
  const resp = await page.goto(url + '/');
  expectEq('with a key set, GET / without it answers 401', 401, resp.status());
  expectEq('... with the sign-in page for the browser', 'text/html; charset=utf-8', resp.headers()['content-type']);
  check('the 401 page never holds the key', !(await resp.text()).includes(RIGHT_KEY));
  await page.fill('#key', WRONG_KEY);
  await page.click('#open');
  await page.waitForFunction(() => document.querySelector('#msg')?.textContent.includes('401'));
  const msg = await page.locator('#msg').textContent();
  check('wrong key: plain-words 401 message', msg.startsWith('Wrong API key') && msg.includes('401 Unauthorized'), msg);
  expectEq('wrong key: not kept', null, await page.evaluate(() => sessionStorage.getItem('hadm.apiKey')));
  await screenshot(page, 'wrong-key');

  await page.fill('#key', RIGHT_KEY);
  await page.click('#open');
  await page.waitForSelector('#detect-h', { timeout: 15000 });
  check('right key: the console opens', true);
  expectEq('the key lives in sessionStorage', RIGHT_KEY, await page.evaluate(() => sessionStorage.getItem('hadm.apiKey')));
  expectEq('nor in localStorage', 0, await page.evaluate(() => localStorage.length));
  check('the page HTML never holds the key', !(await page.content()).includes(RIGHT_KEY));
  await page.fill('#min-score', '0');
  await page.setInputFiles('#files', IMAGE2);
  await page.click('#run');
  await page.waitForFunction(() => /detecting… [2-9] s/.test(document.querySelector('#progress-text').textContent));
  const waitText = await page.locator('#progress-text').textContent();
  check('slow server: the wait is counted in seconds', /detecting… \d+ s$/.test(waitText), waitText);
  check('slow server: spinner shown while waiting', await page.locator('#progress .spinner').isVisible());
  await screenshot(page, 'slow-server');
  await page.waitForSelector('#results .result', { timeout: 60000 });
  const card = page.locator('#results .result').last();
  const expected = await apiDetect(url, IMAGE2, RIGHT_KEY);
  expectEq('right key: boxes drawn = API detections', expected.length, await card.locator('svg.boxes g.box').count());
  await screenshot(page, 'right-key');

  // a key that stops working: the console asks again in a dialog
  await page.evaluate(() => sessionStorage.setItem('hadm.apiKey', 'stale-key'));
  await page.getByRole('button', { name: 'Unload HADM-G (global)', exact: true }).click();
  await page.waitForSelector('#key-dialog[open]');
  check('a 401 opens the key dialog', (await page.locator('#key-msg').textContent()).includes('401'));
  await page.fill('#key-input', WRONG_KEY);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#key-msg').textContent.startsWith('Wrong API key'));
  check('dialog: wrong key gets the 401 message', true);
  await screenshot(page, 'dialog-wrong-key');
  await page.fill('#key-input', RIGHT_KEY);
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('tr[data-model="hadm-g"] .state')?.textContent === 'unloaded');
  expectEq('dialog: right key, the unload went through', 'unloaded', await modelState(url, 'hadm-g', RIGHT_KEY));
  await screenshot(page, 'dialog-right-key');
  await context.close();
  expectEq('keyed server stops with exit 0', 0, await stopServer());
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    // as root (CI), chromium's sandbox cannot start; the pages are our own.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  try {
    await consoleWithoutKey(browser);
    await consoleWithKey(browser);
  } finally {
    await browser.close();
    await stopServer();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => { console.log(passed + ' passed, ' + failed + ' failed'); process.exit(failed ? 1 : 0); },
  async (e) => {
    console.log('FAIL ' + (e && e.stack || e));
    if (server) server.proc.kill('SIGKILL');
    console.log(passed + ' passed, ' + (failed + 1) + ' failed');
    process.exit(1);
  });
