/* hadm web console: uploads images to /api/v1/detect, draws the boxes it gets
 * back, runs the models panel and the live figures. Plain browser JS, no
 * framework. The API key, when the server wants one, lives only in this
 * tab's sessionStorage. Text from the server is only ever set as textContent. */
'use strict';

(function () {
  const KEY_NAME = 'hadm.apiKey';
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  /* ---------- API key and requests ---------- */

  let keyPrompt = null; // the one pending prompt that concurrent 401s share
  let keyDeclined = false; // the dialog was dismissed: background polls stop asking

  function apiKey() { return sessionStorage.getItem(KEY_NAME) || ''; }

  function authHeaders() {
    const k = apiKey();
    return k ? { 'X-API-Key': k } : {};
  }

  /* Shows the key dialog; resolves once a key the server accepts is stored,
   * rejects when the dialog is dismissed. */
  function askForKey(hadKey) {
    if (keyPrompt) return keyPrompt;
    const dlg = $('key-dialog'), form = $('key-form'), input = $('key-input'), msg = $('key-msg');
    keyPrompt = new Promise((resolve, reject) => {
      let accepted = false;
      msg.textContent = hadKey
        ? 'The server refused the API key (401 Unauthorized). Enter the right key.'
        : 'This server needs an API key (401 Unauthorized). Enter it to go on.';
      input.value = '';
      const onSubmit = async (ev) => {
        ev.preventDefault();
        const key = input.value.trim();
        if (!key) { msg.textContent = 'Enter a key first.'; return; }
        msg.textContent = 'Checking the key…';
        let r;
        try {
          r = await fetch('/models/status', { headers: { 'X-API-Key': key }, cache: 'no-store' });
        } catch (e) {
          msg.textContent = 'Could not reach the server to check the key: ' + e.message;
          return;
        }
        if (r.status === 401) {
          msg.textContent = 'Wrong API key: the server answered 401 Unauthorized. Check it and try again.';
          input.select();
          return;
        }
        sessionStorage.setItem(KEY_NAME, key);
        accepted = true;
        dlg.close();
      };
      const onClose = () => {
        form.removeEventListener('submit', onSubmit);
        dlg.removeEventListener('close', onClose);
        keyPrompt = null;
        keyDeclined = !accepted;
        if (accepted) resolve();
        else reject(new Error('No API key was given, so the server refuses the request (401 Unauthorized).'));
      };
      form.addEventListener('submit', onSubmit);
      dlg.addEventListener('close', onClose);
      if (!dlg.open) dlg.showModal();
      input.focus();
    });
    return keyPrompt;
  }

  /* A 401 asks for the key and tries again; background polls (quiet) give up
   * instead once the user has dismissed the dialog. */
  async function withKey(send, quiet) {
    for (;;) {
      const sent = apiKey();
      const r = await send();
      if (r.status !== 401) return r;
      if (quiet && keyDeclined) return r;
      await askForKey(sent !== '' || apiKey() !== '');
    }
  }

  function api(path, opts = {}, quiet = false) {
    return withKey(() => fetch(path, { ...opts, headers: { ...(opts.headers || {}), ...authHeaders() } }), quiet);
  }

  async function readJson(r) {
    const text = await r.text();
    try { return JSON.parse(text); } catch (e) { return { detail: text.slice(0, 300) }; }
  }

  /* A server error in plain words: what happened, then the server's detail. */
  function explain(status, body) {
    const said = body && (body.detail || body.message);
    const detail = said ? '. The server said: ' + said : '';
    const words = {
      400: 'The server could not read this image or a field of the request',
      401: 'The server refused the API key',
      404: 'The server does not know this address',
      413: 'The file is larger than the server accepts',
      415: 'This file is not an image the server can read (JPEG, PNG or WebP)',
      422: 'The image has too many pixels for the server',
      500: 'The server failed while working on this request',
      503: 'The server cannot take this now: the queue is full or a model is not loaded',
      504: 'The server took too long and gave up',
    };
    return (words[status] || 'The server answered with status ' + status) + detail + (/[.!?]$/.test(detail) ? '' : '.');
  }

  /* ---------- detection ---------- */

  const results = []; // {file, url, response, error}
  let chosen = [];

  function setChosen(files) {
    chosen = Array.from(files).filter((f) => f.type.startsWith('image/') || f.type === '');
    const skipped = files.length - chosen.length;
    const mb = chosen.reduce((s, f) => s + f.size, 0) / 1048576;
    $('chosen').textContent = chosen.length
      ? chosen.length + (chosen.length === 1 ? ' image' : ' images') + ' chosen (' + mb.toFixed(1) + ' MB)' +
        (skipped ? '; ' + skipped + ' file(s) skipped: not images.' : '.')
      : (skipped ? 'Those files are not images.' : 'No image chosen.');
  }

  function showProgress(text, fraction, done = false) {
    $('progress').hidden = false;
    $('progress').classList.toggle('done', done);
    $('progress-text').textContent = text;
    const bar = $('progress-bar');
    if (fraction == null) bar.removeAttribute('value'); // indeterminate while the server works
    else bar.value = Math.round(fraction * 100);
  }

  /* One upload with XMLHttpRequest: fetch() cannot report upload progress,
   * which a 30 MB image on a slow link needs. Resolves {status, body}. */
  function uploadOnce(file, mode, label) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', '/api/v1/detect?mode=' + encodeURIComponent(mode));
      const h = authHeaders();
      for (const k in h) xhr.setRequestHeader(k, h[k]);
      // A slow server (a model still loading, a long queue) shows time passing.
      let sentAt = 0, ticker = 0;
      const waiting = () => {
        const s = Math.round((Date.now() - sentAt) / 1000);
        showProgress(label + ': sent; the server is detecting…' + (s >= 2 ? ' ' + s + ' s' : ''), null);
      };
      const sent = () => {
        if (sentAt) return;
        sentAt = Date.now();
        waiting();
        ticker = setInterval(waiting, 1000);
      };
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        if (e.loaded < e.total) showProgress(label + ': sending ' + Math.round(100 * e.loaded / e.total) + '%', e.loaded / e.total);
        else sent();
      };
      xhr.upload.onload = sent;
      xhr.onloadend = () => clearInterval(ticker);
      xhr.onload = () => {
        let body;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = { detail: xhr.responseText.slice(0, 300) }; }
        resolve({ status: xhr.status, body });
      };
      xhr.onerror = () => reject(new Error('Could not reach the server (a network error, or the server stopped).'));
      xhr.ontimeout = () => reject(new Error('The request timed out.'));
      const fd = new FormData();
      fd.append('file', file, file.name);
      fd.append('mode', mode);
      xhr.send(fd);
    });
  }

  function detectFile(file, mode, label) {
    return withKey(() => uploadOnce(file, mode, label), false);
  }

  async function runDetect(ev) {
    ev.preventDefault();
    $('detect-error').textContent = '';
    if (!chosen.length) {
      $('detect-error').textContent = 'Choose or drop at least one image first.';
      $('files').focus();
      return;
    }
    const mode = $('mode').value, files = chosen.slice();
    $('run').disabled = true;
    $('detect-form').setAttribute('aria-busy', 'true');
    try {
      for (let i = 0; i < files.length; i++) {
        const label = 'Image ' + (i + 1) + ' of ' + files.length + ' (' + files[i].name + ')';
        showProgress(label + ': sending', 0);
        const entry = { file: files[i], url: URL.createObjectURL(files[i]), response: null, error: null };
        try {
          const r = await detectFile(files[i], mode, label);
          if (r.status === 200 && r.body && r.body.success !== false) entry.response = r.body;
          else entry.error = explain(r.status, r.body);
        } catch (e) {
          entry.error = e.message;
        }
        results.push(entry);
        renderResult(entry);
      }
      showProgress('Done: ' + files.length + (files.length === 1 ? ' image.' : ' images.'), 1, true);
    } finally {
      $('run').disabled = false;
      $('detect-form').removeAttribute('aria-busy');
      $('download').disabled = $('clear').disabled = results.length === 0;
    }
  }

  function minScore() {
    const v = parseFloat($('min-score').value);
    return Number.isFinite(v) ? Math.min(Math.max(v, 0), 1) : 0;
  }

  /* The detections to show: both lists, tagged, at or above the minimum score. */
  function shownDetections(resp) {
    const min = minScore(), out = [];
    for (const [list, kind] of [[resp.local_detections, 'local'], [resp.global_detections, 'global']]) {
      for (const d of list || []) {
        if (!Array.isArray(d.bbox) || d.bbox.length !== 4 || !(d.confidence >= min)) continue;
        out.push({ kind, d });
      }
    }
    return out;
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }

  function renderResult(entry) {
    const card = el('article', { class: 'result' });
    entry.card = card;
    card.append(el('h3', {}, entry.file.name));
    if (entry.error) {
      card.append(el('p', { class: 'error', role: 'alert' }, entry.error));
      $('results').append(card);
      return;
    }
    card.append(el('p', { class: 'summary' }, ''));
    const legend = el('div', { class: 'legend', 'aria-hidden': 'true' });
    legend.append(el('span', { class: 'local' }, '▬ local (HADM-L)'), el('span', { class: 'global' }, '╍ global (HADM-G)'));
    const stage = el('div', { class: 'stage' });
    const img = el('img', { src: entry.url, alt: 'Uploaded image ' + entry.file.name });
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', 'boxes');
    svg.setAttribute('preserveAspectRatio', 'none');
    stage.append(img, svg);
    const tip = el('p', { class: 'tip', 'aria-live': 'polite' }, 'Hover or tab to a box to see its class and score.');
    const wrap = el('div', { class: 'table-wrap' });
    card.append(legend, stage, tip, wrap);
    $('results').append(card);
    drawResult(entry);
  }

  function boxLabel(n, kind, d) {
    return '#' + n + ' ' + kind + ': ' + d.class_name + ', score ' + d.confidence.toFixed(3);
  }

  function highlight(card, n, on) {
    card.querySelectorAll('[data-n="' + n + '"]').forEach((e) => e.classList.toggle('hl', on));
  }

  /* Draws (again) the boxes and table of one result for the current minimum score. */
  function drawResult(entry) {
    const card = entry.card, resp = entry.response;
    if (!card || !resp) return;
    const size = (resp.results && resp.results.image_size) || [1, 1];
    const [w, h] = size, shown = shownDetections(resp);
    const svg = card.querySelector('svg.boxes'), tip = card.querySelector('.tip');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.replaceChildren();
    const font = Math.max(w, h) / 40;
    // Larger boxes first, so a small box inside a large one stays on top and
    // can be hovered; the numbers keep the table's order.
    const area = ({ d }) => Math.abs((d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]));
    const order = shown.map((s, i) => ({ ...s, n: i + 1 })).sort((a, b) => area(b) - area(a));
    order.forEach(({ kind, d, n }) => {
      const [x1, y1, x2, y2] = d.bbox.map(Number);
      const g = document.createElementNS(SVG_NS, 'g');
      g.setAttribute('class', 'box ' + kind);
      g.setAttribute('tabindex', '0');
      g.setAttribute('role', 'img');
      g.setAttribute('data-n', n);
      g.setAttribute('aria-label', boxLabel(n, kind, d));
      const rect = document.createElementNS(SVG_NS, 'rect');
      rect.setAttribute('class', 'box');
      rect.setAttribute('x', x1); rect.setAttribute('y', y1);
      rect.setAttribute('width', Math.max(0, x2 - x1)); rect.setAttribute('height', Math.max(0, y2 - y1));
      const title = document.createElementNS(SVG_NS, 'title');
      title.textContent = boxLabel(n, kind, d);
      const text = document.createElementNS(SVG_NS, 'text');
      text.setAttribute('x', x1 + font * 0.2); text.setAttribute('y', y1 + font);
      text.setAttribute('font-size', font);
      text.textContent = String(n);
      g.append(rect, title, text);
      const show = () => { tip.textContent = boxLabel(n, kind, d); highlight(card, n, true); };
      const hide = () => highlight(card, n, false);
      g.addEventListener('mouseenter', show); g.addEventListener('focus', show);
      g.addEventListener('mouseleave', hide); g.addEventListener('blur', hide);
      svg.append(g);
    });
    const total = (resp.local_detections || []).length + (resp.global_detections || []).length;
    card.querySelector('.summary').textContent = w + '×' + h + ' px, mode ' + resp.results.mode + ': ' +
      shown.length + ' of ' + total + ' detections at score ≥ ' + minScore() +
      (typeof resp.processing_time === 'number' ? ', ' + resp.processing_time.toFixed(2) + ' s on the server.' : '.');
    card.querySelector('.table-wrap').replaceChildren(detectionTable(card, shown));
  }

  function detectionTable(card, shown) {
    if (!shown.length) return el('p', { class: 'hint' }, 'No detections at this minimum score.');
    const t = el('table', { class: 'detections' });
    const head = el('tr');
    for (const c of ['#', 'Model', 'Class', 'Score', 'Box x1, y1, x2, y2 (px)']) head.append(el('th', { scope: 'col' }, c));
    t.append(el('caption', { class: 'hint' }, 'Detections, strongest first per model'), el('thead'), el('tbody'));
    t.tHead.append(head);
    shown.forEach(({ kind, d }, i) => {
      const tr = el('tr', { 'data-n': i + 1 });
      tr.append(el('td', { class: 'num' }, String(i + 1)),
        el('td', {}, kind === 'local' ? 'HADM-L (local)' : 'HADM-G (global)'),
        el('td', {}, d.class_name),
        el('td', { class: 'num' }, d.confidence.toFixed(3)),
        el('td', { class: 'num' }, d.bbox.map((v) => Number(v).toFixed(1)).join(', ')));
      tr.addEventListener('mouseenter', () => highlight(card, i + 1, true));
      tr.addEventListener('mouseleave', () => highlight(card, i + 1, false));
      t.tBodies[0].append(tr);
    });
    return t;
  }

  function downloadJson() {
    const data = results.map((r) => ({ filename: r.file.name, result: r.response, error: r.error }));
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
    const a = el('a', { href: URL.createObjectURL(blob), download: 'hadm-detections.json' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  function clearResults() {
    for (const r of results) URL.revokeObjectURL(r.url);
    results.length = 0;
    $('results').replaceChildren();
    $('download').disabled = $('clear').disabled = true;
    $('files').focus();
  }

  /* ---------- models panel ---------- */

  const MODELS = [['hadm-l', 'l', 'HADM-L (local)'], ['hadm-g', 'g', 'HADM-G (global)']];
  let fastPollUntil = 0;

  function fmtSeconds(s) {
    if (typeof s !== 'number' || !(s > 0)) return '–';
    return s < 0.1 ? (s * 1000).toFixed(1) + ' ms' : s.toFixed(2) + ' s';
  }
  function fmtBytes(b) {
    if (typeof b !== 'number' || !(b > 0)) return '–';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return b.toFixed(i ? 1 : 0) + ' ' + u[i];
  }

  function modelRow(name, letter, label, m) {
    const tr = el('tr', { 'data-model': name });
    const th = el('th', { scope: 'row' }, label);
    if (m && m.source) th.append(el('div', { class: 'hint', title: m.source }, m.source.split('/').pop()));
    if (m && m.params) th.append(el('div', { class: 'hint' }, (m.params / 1e6).toFixed(1) + ' M parameters'));
    const state = (m && m.state) || 'unknown';
    const stateCell = el('td');
    stateCell.append(el('span', { class: 'state ' + state }, state.replace('_', ' ')));
    if (m && m.load_seconds > 0) stateCell.append(el('div', { class: 'hint load-time' }, 'last load took ' + fmtSeconds(m.load_seconds)));
    if (m && m.error) stateCell.append(el('div', { class: 'error' }, m.error));
    const act = el('td', { class: 'buttons' });
    const load = el('button', { type: 'button', class: 'small', 'data-action': 'load_' + letter }, 'Load');
    const unload = el('button', { type: 'button', class: 'small', 'data-action': 'unload_' + letter }, 'Unload');
    load.setAttribute('aria-label', 'Load ' + label);
    unload.setAttribute('aria-label', 'Unload ' + label);
    load.disabled = !m || state === 'ready' || state === 'loading' || state === 'not_configured';
    unload.disabled = !m || state === 'unloaded' || state === 'not_configured';
    load.addEventListener('click', () => control('load_' + letter));
    unload.addEventListener('click', () => control('unload_' + letter));
    act.append(load, unload);
    tr.append(th, stateCell, act);
    return tr;
  }

  function renderModels(models) {
    const body = $('models-table').tBodies[0];
    // Keep keyboard focus on the same button across the redraw.
    const focused = document.activeElement && document.activeElement.getAttribute('data-action');
    body.replaceChildren(...MODELS.map(([n, l, label]) => modelRow(n, l, label, models && models[n])));
    if (focused) {
      const again = body.querySelector('[data-action="' + focused + '"]');
      if (again && !again.disabled) again.focus();
      else if (again) body.querySelector('[data-action]:not(:disabled)')?.focus();
    }
  }

  async function control(action) {
    $('models-msg').textContent = 'Asking the server to ' + action.replace('_', ' ') + '…';
    try {
      const r = await api('/api/control/' + action, { method: 'POST' });
      const body = await readJson(r);
      $('models-msg').textContent = r.ok ? body.message || 'Done.' : explain(r.status, body);
    } catch (e) {
      $('models-msg').textContent = e.message;
    }
    fastPollUntil = Date.now() + 60000;
    pollModels();
  }

  function gpuFacts(gpu) {
    if (!gpu) return [['GPU', '–']];
    if (!Array.isArray(gpu.devices) || !gpu.devices.length)
      return [['GPU', (gpu.available ? 'available' : 'none') + (gpu.detail ? ': ' + gpu.detail : '')]];
    return gpu.devices.map((d) => ['GPU ' + d.index, (d.name || '?') + ': ' + fmtBytes(d.free_bytes) + ' free of ' +
      fmtBytes(d.total_bytes) + (d.reserved_by_models_bytes > 0 ? ', models hold ' + fmtBytes(d.reserved_by_models_bytes) : '')]);
  }

  function renderMachine(diag) {
    const facts = [
      ['Process memory (RSS)', fmtBytes(diag.memory && diag.memory.process_rss_bytes)],
      ['Machine memory free', fmtBytes(diag.memory && diag.memory.available_bytes) + ' of ' +
        fmtBytes(diag.memory && diag.memory.total_bytes)],
      ['CPU', (diag.cpu && diag.cpu.model ? diag.cpu.model + ', ' : '') + (diag.cpu ? diag.cpu.cores + ' cores' : '–')],
      ...gpuFacts(diag.gpu),
      ['Requests in flight', String(diag.requests_in_flight ?? '–')],
      ['Version', diag.version || '–'],
    ];
    $('machine').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  let modelsTimer = 0;
  async function pollModels() {
    clearTimeout(modelsTimer);
    let loading = false;
    try {
      const [rs, rd] = await Promise.all([api('/models/status', {}, true), api('/api/diagnostics', {}, true)]);
      if (rs.ok) {
        const s = await readJson(rs);
        renderModels(s.models);
        loading = MODELS.some(([n]) => s.models && s.models[n] && s.models[n].state === 'loading');
      } else {
        $('models-msg').textContent = explain(rs.status, await readJson(rs));
      }
      if (rd.ok) renderMachine(await readJson(rd));
    } catch (e) {
      $('models-msg').textContent = 'Could not reach the server: ' + e.message;
    }
    const fast = loading && Date.now() < fastPollUntil;
    modelsTimer = setTimeout(pollModels, fast ? 400 : POLL_MS);
  }

  /* ---------- live figures from /metrics ---------- */

  /* Prometheus text: [{name, labels, value}] for the lines we read. */
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
      const m = /^([a-z_:][a-z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/i.exec(line);
      if (!m) continue;
      const labels = {};
      for (const p of (m[3] || '').matchAll(/([a-z_]+)="([^"]*)"/gi)) labels[p[1]] = p[2];
      out.push({ name: m[1], labels, value: parseFloat(m[4]) });
    }
    return out;
  }

  const DETECT_ROUTES = ['/api/v1/detect', '/api/detect', '/detect', '/api/v1/detect-base64', '/detect/batch'];
  let lastLatency = null;

  function sum(metrics, name, pred) {
    return metrics.filter((m) => m.name === name && (!pred || pred(m.labels))).reduce((s, m) => s + m.value, 0);
  }

  async function pollMetrics() {
    try {
      const [rh, rm] = await Promise.all([fetch('/health'), api('/metrics', {}, true)]);
      const health = rh.ok ? await rh.json() : null;
      $('live-server').textContent = health ? 'up ' + Math.round(health.uptime_s) + ' s' : 'answering ' + rh.status;
      if (rm.status === 401) { $('live-queue').textContent = 'needs the API key'; throw null; }
      if (!rm.ok) throw new Error(explain(rm.status, null));
      const m = parseMetrics(await rm.text());
      $('live-queue').textContent = String(sum(m, 'hadm_queue_depth'));
      $('live-running').textContent = String(sum(m, 'hadm_running_jobs'));
      const ok = (l) => DETECT_ROUTES.includes(l.route) && l.status === '200';
      const now = { s: sum(m, 'hadm_http_request_duration_seconds_sum', ok), n: sum(m, 'hadm_http_request_duration_seconds_count', ok) };
      let text = 'no detections yet';
      if (lastLatency && now.n > lastLatency.n) {
        text = ((now.s - lastLatency.s) / (now.n - lastLatency.n)).toFixed(2) + ' s (last ' + (now.n - lastLatency.n) + ')';
      } else if (now.n > 0) {
        text = (now.s / now.n).toFixed(2) + ' s (mean of ' + now.n + ')';
      }
      $('live-latency').textContent = text;
      lastLatency = now;
    } catch (e) {
      if (e) $('live-server').textContent = 'unreachable';
    }
    setTimeout(pollMetrics, POLL_MS);
  }

  /* ---------- wiring ---------- */

  function init() {
    const drop = $('drop');
    $('files').addEventListener('change', (e) => setChosen(e.target.files));
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      if (e.dataTransfer && e.dataTransfer.files.length) setChosen(e.dataTransfer.files);
    });
    // A drop that misses the zone must not navigate away from the console.
    document.addEventListener('dragover', (e) => e.preventDefault());
    document.addEventListener('drop', (e) => e.preventDefault());
    $('detect-form').addEventListener('submit', runDetect);
    $('min-score').addEventListener('input', () => results.forEach(drawResult));
    $('download').addEventListener('click', downloadJson);
    $('clear').addEventListener('click', clearResults);
    $('key-cancel').addEventListener('click', () => $('key-dialog').close());
    renderModels(null);
    pollModels();
    pollMetrics();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init(); // loaded by the sign-in page after the document was built
})();
