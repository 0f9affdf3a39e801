// Runs a seqdeploy bundle's portable ONNX file in the page with onnxruntime-web.
//
//   index.html?bundle=bundles/sentiment            the form (a review, or a pasted CSV row)
//   index.html?bundle=bundles/sentiment&input=...  the form filled in and answered
//   index.html?bundle=bundles/sentiment&check=1    self-check: golden_portable.json's inputs -> answers compared
//
// The bundle URL is relative to the page (same origin). Every answer is also written as JSON
// into <pre id="result">: {"ok", "mode", "outputs": {name: {dtype, shape, data}}, ...}.
'use strict';

(function () {
  const ORT_DIST = 'node_modules/onnxruntime-web/dist/';
  const EXACT = new Set(['str', 'int64', 'int32', 'bool']);
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const state = { manifest: null, portable: null, session: null, golden: null, base: null };

  class InputError extends Error {}

  function setResult(obj) {
    $('result').textContent = JSON.stringify(obj);
    document.body.dataset.state = obj.ok ? 'done' : 'error';
  }

  function showError(msg) {
    $('error').textContent = msg;
    $('error').hidden = false;
  }

  function fail(msg, mode) {
    showError(msg);
    setResult({ ok: false, mode, error: msg });
  }

  // The bundle directory as a same-origin URL ending in '/'.
  function bundleUrl() {
    const rel = params.get('bundle');
    if (!rel) throw new InputError('no bundle given: open this page as index.html?bundle=PATH, PATH being a bundle '
      + 'directory (with manifest.json) relative to the page, e.g. ?bundle=bundles/sentiment');
    const url = new URL(rel.endsWith('/') ? rel : rel + '/', location.href);
    if (url.origin !== location.origin) throw new InputError(`bundle=${rel}: expected a path on this site`);
    return url;
  }

  function fileUrl(name) {
    if (typeof name !== 'string' || name.startsWith('/') || name.split(/[\\/]/).includes('..') || name.includes(':')) {
      throw new InputError(`the manifest names ${JSON.stringify(name)}: expected a file inside the bundle`);
    }
    return new URL(name, state.base);
  }

  async function fetchOk(url, what) {
    let res;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new InputError(`cannot fetch ${url} (${what}): ${e.message}`);
    }
    if (!res.ok) throw new InputError(`${url} answered HTTP ${res.status} (${what}); check the bundle= path`);
    return res;
  }

  async function sha256Hex(bytes) {
    if (!(window.crypto && crypto.subtle)) return null; // only on https:// or localhost pages
    const digest = await crypto.subtle.digest('SHA-256', bytes);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function load() {
    if (typeof ort === 'undefined') {
      throw new InputError('onnxruntime-web did not load: run `npm install --ignore-scripts` in examples/web '
        + `and serve that directory (the page loads ${ORT_DIST}ort.wasm.min.js)`);
    }
    ort.env.wasm.numThreads = 1; // no cross-origin isolation needed
    ort.env.wasm.wasmPaths = new URL(ORT_DIST, location.href).href;
    state.base = bundleUrl();
    const manifest = await (await fetchOk(new URL('manifest.json', state.base), 'the bundle manifest')).json();
    if (!Number.isInteger(manifest.schema_version) || manifest.schema_version > 2) {
      throw new InputError(`manifest schema_version ${manifest.schema_version}: this page understands 1-2`);
    }
    const want = params.get('artifact') || manifest.deployment_artifact;
    const art = (manifest.artifacts || []).find((a) => a.file === want || a.precision === want || a.recipe === want);
    if (!art) throw new InputError(`artifact ${JSON.stringify(want)} is not in the manifest`);
    if (!art.portable) {
      throw new InputError(`${art.file} has no portable graph (the bundle predates it): `
        + 'rebuild it with a current seqdeploy');
    }
    // Ops outside core ONNX and ai.onnx.ml (e.g. onnxruntime-extensions' ai.onnx.contrib string ops) need a
    // custom-op library onnxruntime-web does not have: say so, and what to use instead (the manifest's `bindings`).
    // (com.microsoft ops of quantized graphs are built into onnxruntime-web; ai.onnx.contrib ones are not)
    const custom = (art.portable.contrib_ops || []).filter((op) => op.startsWith('ai.onnx.contrib:'));
    const rec = (manifest.bindings || []).find((b) => b.binding === 'web');
    if (custom.length) { // decided per artifact; the note is the manifest's when it has one
      throw new InputError(`${art.portable.file} cannot run here: ` + (rec && rec.note ? rec.note
        : `it needs custom ops (${custom.join(', ')}) that onnxruntime-web does not have; run the bundle with the `
          + 'Python runtime, or call `seqdeploy serve` over the Open Inference Protocol (HTTP/JSON)'));
    }
    const bytes = new Uint8Array(await (await fetchOk(fileUrl(art.portable.file), 'the portable model')).arrayBuffer());
    const sha = await sha256Hex(bytes);
    if (sha !== null && sha !== art.portable.sha256) {
      throw new InputError(`${art.portable.file}: sha256 ${sha.slice(0, 16)}... differs from the manifest; `
        + 'copy the bundle again');
    }
    state.session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    });
    state.manifest = manifest;
    state.portable = { ...art.portable, verified: sha !== null };
    try {
      state.golden = await (await fetch(fileUrl('golden_portable.json'))).json();
    } catch (e) {
      state.golden = null; // optional: only the example button and the self-check use it
    }
  }

  // ------------------------------------------------------------ raw input -> tensors

  function rawInput() {
    const name = state.session.inputNames[0];
    return (state.portable.inputs || []).find((t) => t.name === name) || { name, dtype: 'float32', shape: [] };
  }

  function featureNames() {
    const names = state.manifest.preprocessing && state.manifest.preprocessing.feature_names;
    return Array.isArray(names) ? names : null;
  }

  function number(field, where) {
    const s = field.trim();
    const v = Number(s);
    if (s === '' || !Number.isFinite(v)) throw new InputError(`${where}: ${JSON.stringify(field)} is not a number`);
    return v;
  }

  // Pasted CSV: one row per line, numbers separated by commas or tabs, in the manifest's feature
  // order; a header line picks the feature columns by name.
  function parseRows(text, input) {
    const dims = input.shape.slice(1);
    const width = dims.reduce((n, d) => n * d, 1);
    const names = featureNames();
    let lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
    if (!lines.length) throw new InputError(`paste a row of ${width} numbers`);
    const split = (l) => l.split(/[,\t]/);
    let order = null;
    const head = split(lines[0]);
    if (names && head.every((f) => f.trim() === '' || Number.isNaN(Number(f.trim())))) { // a header: no numbers
      const cols = head.map((h) => h.trim());
      const missing = names.filter((f) => !cols.includes(f));
      if (missing.length) {
        throw new InputError(`the header lacks ${missing.slice(0, 4).join(', ')} (${missing.length} missing)`);
      }
      order = names.map((f) => cols.indexOf(f));
      lines = lines.slice(1);
      if (!lines.length) throw new InputError('the header has no data row below it');
    }
    const data = new Float32Array(lines.length * width);
    lines.forEach((line, r) => {
      const fields = split(line);
      const where = lines.length > 1 ? `row ${r + 1}` : 'the row';
      if (order) {
        order.forEach((c, j) => { data[r * width + j] = number(fields[c] || '', `${where}, ${names[j]}`); });
      } else if (fields.length !== width) {
        throw new InputError(`${where} has ${fields.length} values; expected ${width}`
          + (names ? ` (${names.slice(0, 3).join(', ')}, ...)` : ''));
      } else {
        fields.forEach((f, j) => { data[r * width + j] = number(f, `${where}, value ${j + 1}`); });
      }
    });
    return { dtype: input.dtype, shape: [lines.length, ...dims], data };
  }

  function isMixed() {
    const pre = state.manifest.preprocessing;
    return Boolean(pre && pre.kind === 'categorical');
  }

  // Pasted rows of a bundle with numeric and categorical columns (two raw inputs): a header line names
  // the columns (any order, extras ignored); without one, the numeric columns then the categorical ones,
  // in manifest order. Categories are text, trimmed of the spaces around them (unseen ones go to the
  // model's OOV bucket).
  function parseMixedRows(text) {
    const pre = state.manifest.preprocessing;
    const num = pre.feature_names || [];
    const cat = pre.categorical_names || [];
    const all = [...num, ...cat];
    let lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
    if (!lines.length) throw new InputError(`paste a row of ${all.length} values: ${all.join(', ')}`);
    const split = (l) => l.split(/[,\t]/);
    let order = null;
    const head = split(lines[0]).map((h) => h.trim());
    if (all.every((n) => head.includes(n))) {
      order = all.map((n) => head.indexOf(n));
      lines = lines.slice(1);
      if (!lines.length) throw new InputError('the header has no data row below it');
    }
    const features = new Float32Array(lines.length * num.length);
    const categories = [];
    lines.forEach((line, r) => {
      const fields = split(line);
      const where = lines.length > 1 ? `row ${r + 1}` : 'the row';
      if (!order && fields.length !== all.length) {
        throw new InputError(`${where} has ${fields.length} values; expected ${all.length} (${all.join(', ')})`);
      }
      const pick = order ? order.map((i) => fields[i] || '') : fields;
      num.forEach((n, j) => { features[r * num.length + j] = number(pick[j], `${where}, ${n}`); });
      cat.forEach((n, j) => categories.push(pick[num.length + j].trim()));  // typed: ', ' separates
    });
    const feeds = { categories: { dtype: 'str', shape: [lines.length, cat.length], data: categories } };
    if (num.length) feeds.features = { dtype: 'float32', shape: [lines.length, num.length], data: features };
    return feeds;
  }

  function feedsFromText(text) {
    if (isMixed()) return parseMixedRows(text);
    const input = rawInput();
    if (input.dtype === 'str') return { [input.name]: { dtype: 'str', shape: [1], data: [text] } };
    return { [input.name]: parseRows(text, input) };
  }

  function toTensor(entry, name) {
    const { dtype, shape, data } = entry;
    if (dtype === 'str') return new ort.Tensor('string', Array.from(data, String), shape);
    if (dtype === 'int64') return new ort.Tensor('int64', BigInt64Array.from(data, (v) => BigInt(v)), shape);
    if (dtype === 'float32') return new ort.Tensor('float32', Float32Array.from(data), shape);
    if (dtype === 'int32') return new ort.Tensor('int32', Int32Array.from(data), shape);
    throw new InputError(`input ${name} has dtype ${dtype}: not supported by this page`);
  }

  function plain(t) {
    const dtype = t.type === 'string' ? 'str' : t.type;
    const data = dtype === 'str' ? Array.from(t.data) : Array.from(t.data, Number);
    return { dtype, shape: Array.from(t.dims), data };
  }

  async function run(feeds) {
    const tensors = {};
    for (const name of state.session.inputNames) {
      if (!feeds[name]) throw new InputError(`no values for input ${name}`);
      tensors[name] = toTensor(feeds[name], name);
    }
    const t0 = performance.now();
    const res = await state.session.run(tensors);
    const ms = performance.now() - t0;
    const outputs = {};
    for (const name of state.session.outputNames) outputs[name] = plain(res[name]);
    return { outputs, ms };
  }

  // ------------------------------------------------------------ showing answers

  function fmtMs(ms) {
    return `${ms < 0.1 ? 'under 0.1' : ms.toFixed(1)} ms`;
  }

  function pct(v) {
    return `${(100 * v).toFixed(1)}%`;
  }

  function showAnswer(outputs) {
    const bars = $('bars');
    bars.replaceChildren();
    if (outputs.prediction) {
      const p = outputs.prediction;
      const shown = p.data.slice(0, 8).map((v) => v.toPrecision(5)).join(', ');
      const unit = state.manifest.target_name ? ` ${state.manifest.target_name}` : '';
      $('answer-label').textContent = `${shown}${p.data.length > 8 ? ', …' : ''}${unit}`;
    } else {
      const probs = outputs.probabilities;
      const c = probs.shape[1];
      const first = probs.data.slice(0, c);
      const label = outputs.label ? outputs.label.data[0] : String(outputs.class_id.data[0]);
      const rows = probs.shape[0];
      $('answer-label').textContent = rows > 1 ? `${label} (first of ${rows} rows)` : label;
      const names = Array.isArray(state.manifest.labels) && state.manifest.labels.length === c
        ? state.manifest.labels : first.map((_, j) => `class ${j}`);
      const top = Number(outputs.class_id.data[0]);
      first.forEach((v, j) => {
        const row = document.createElement('div');
        row.className = 'bar-row' + (j === top ? ' top' : '');
        const name = document.createElement('span');
        name.textContent = names[j];
        const bar = document.createElement('div');
        bar.className = 'bar';
        const fill = document.createElement('span');
        fill.style.width = pct(Math.min(1, Math.max(0, v)));
        bar.append(fill);
        const num = document.createElement('span');
        num.className = 'num';
        num.textContent = pct(v);
        row.append(name, bar, num);
        bars.append(row);
      });
    }
    $('answer').hidden = false;
  }

  function describeModel() {
    const m = state.manifest;
    const p = state.portable;
    const kind = m.task === 'regression' ? 'regression' : `${m.task} classifier`;
    const labels = Array.isArray(m.labels) ? ` · classes: ${m.labels.join(', ')}` : '';
    const kb = p.size ? ` (${(p.size / 1024).toFixed(0)} kB${p.verified ? ', sha256 checked' : ''})` : '';
    const box = $('model');
    box.replaceChildren();
    const b = document.createElement('b');
    b.textContent = m.name;
    box.append('Model: ', b, ` — ${kind}${labels}`, document.createElement('br'), `File: ${p.file}${kb}`);
    const input = rawInput();
    if (isMixed()) {
      const pre = m.preprocessing;
      const all = [...(pre.feature_names || []), ...(pre.categorical_names || [])];
      $('input-label').textContent = 'A CSV row';
      $('input').placeholder = `Paste ${all.length} comma-separated values`;
      $('hint').textContent = `${all.length} values in this order: ${all.join(', ')} (the last `
        + `${(pre.categorical_names || []).length} are categories). Or paste a header line and rows.`;
    } else if (input.dtype === 'str') {
      $('input-label').textContent = 'Your text';
      $('input').placeholder = 'Type a review, e.g. “The acting was great but the plot was not.”';
      $('hint').textContent = 'The text is tokenized inside the model file, exactly as in training.';
    } else {
      const width = input.shape.slice(1).reduce((n, d) => n * d, 1);
      const names = featureNames();
      $('input-label').textContent = 'A CSV row';
      $('input').placeholder = `Paste ${width} comma-separated numbers`;
      $('hint').textContent = names
        ? `${width} numbers in this order: ${names.join(', ')}. Or paste a header line and rows.`
        : `${width} numbers (${input.shape.slice(1).join(' × ')} values, row by row).`;
    }
    $('form').hidden = false;
    $('example').hidden = !state.golden;
  }

  // The shortest decimal that reads back as the same float32 (19.549999237060547 -> 19.55).
  function shortFloat32(v) {
    for (let p = 1; p < 17; p++) {
      const s = Number(v.toPrecision(p));
      if (Math.fround(s) === Math.fround(v)) return String(s);
    }
    return String(v);
  }

  function exampleText() {
    if (isMixed()) {
      const f = state.golden.inputs.features;
      const c = state.golden.inputs.categories;
      const nf = f ? f.shape[1] : 0;
      return [...(f ? f.data.slice(0, nf).map(shortFloat32) : []), ...c.data.slice(0, c.shape[1])].join(', ');
    }
    const entry = state.golden.inputs[rawInput().name];
    if (!entry) return '';
    if (entry.dtype === 'str') return entry.data[0];
    const width = entry.shape.slice(1).reduce((n, d) => n * d, 1);
    return entry.data.slice(0, width).map(shortFloat32).join(', ');
  }

  async function predict() {
    $('error').hidden = true;
    const text = $('input').value;
    $('run').disabled = true;
    try {
      const feeds = feedsFromText(text);
      const { outputs, ms } = await run(feeds);
      showAnswer(outputs);
      $('status').textContent = `Answered on this device in ${fmtMs(ms)}.`;
      const input = Object.values(feeds)[0];
      setResult({ ok: true, mode: 'predict', input: { ...input, data: Array.from(input.data) }, outputs });
    } catch (e) {
      $('answer').hidden = true;
      fail(e instanceof InputError ? e.message : `${e.name}: ${e.message}`, 'predict');
    } finally {
      $('run').disabled = false;
    }
  }

  // ------------------------------------------------------------ self-check

  function compare(name, want, got, atol) {
    if (!got) return { name, ok: false, detail: 'missing from the outputs' };
    if (JSON.stringify(want.shape) !== JSON.stringify(got.shape)) {
      return { name, ok: false, detail: `shape ${JSON.stringify(got.shape)}, expected ${JSON.stringify(want.shape)}` };
    }
    if (EXACT.has(want.dtype)) {
      const bad = want.data.findIndex((v, i) => String(v) !== String(got.data[i]));
      return bad < 0 ? { name, ok: true, detail: `${want.data.length} values equal` }
        : { name, ok: false,
          detail: `[${bad}] = ${JSON.stringify(got.data[bad])}, expected ${JSON.stringify(want.data[bad])}` };
    }
    const err = want.data.reduce((m, v, i) => Math.max(m, Math.abs(got.data[i] - v)), 0);
    return { name, ok: err <= atol, detail: `max abs error ${err.toExponential(2)} (atol ${atol})` };
  }

  async function selfCheck() {
    if (!state.golden) throw new InputError('the bundle has no golden_portable.json (written by seqdeploy verify)');
    const { outputs, ms } = await run(state.golden.inputs);
    const atol = (state.golden.tolerance && state.golden.tolerance.atol) || 1e-4;
    const checks = Object.entries(state.golden.outputs).map(([name, want]) => compare(name, want, outputs[name], atol));
    const ok = checks.length > 0 && checks.every((c) => c.ok);
    const rows = state.session.inputNames.length ? state.golden.inputs[state.session.inputNames[0]].shape[0] : 0;
    const box = $('check');
    box.className = ok ? 'ok' : 'fail';
    box.textContent = ok ? `Self-check passed: ${rows} rows give the answers in golden_portable.json (${fmtMs(ms)}).`
      : `Self-check FAILED: ${checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`).join('; ')}`;
    box.hidden = false;
    showAnswer(outputs);
    setResult({ ok, mode: 'check', file: state.portable.file, rows, checks, outputs });
  }

  async function main() {
    const mode = params.get('check') ? 'check' : 'predict';
    try {
      await load();
    } catch (e) {
      $('model').textContent = 'The bundle could not be loaded.';
      return fail(e instanceof InputError ? e.message : `${e.name}: ${e.message}`, mode);
    }
    describeModel();
    $('form').addEventListener('submit', (ev) => { ev.preventDefault(); predict(); });
    $('example').addEventListener('click', () => { $('input').value = exampleText(); predict(); });
    if (mode === 'check') {
      try {
        await selfCheck();
      } catch (e) {
        fail(e instanceof InputError ? e.message : `${e.name}: ${e.message}`, mode);
      }
    } else if (params.has('input')) {
      $('input').value = params.get('input');
      await predict();
    } else {
      document.body.dataset.state = 'ready';
    }
  }

  main();
})();
