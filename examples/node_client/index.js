#!/usr/bin/env node
// Run a seqdeploy bundle from Node on RAW rows: the portable ONNX file holds the
// preprocessing (scaling, tokenisation), the model and the answers (label,
// probabilities or prediction), so this client only turns what it holds into a
// tensor: a CSV line into floats, a review into a string.
//
//   node index.js BUNDLE_DIR [ROW ...]     one row per argument (a CSV line of numbers, or a text)
//   node index.js BUNDLE_DIR < rows.txt    one row per line; a CSV header row is matched by feature name
//   node index.js BUNDLE_DIR --check       run golden_portable.json's inputs and compare the answers
//
// Options: --json (answers as {"outputs": {name: {dtype, shape, data}}}), --artifact FILE|PRECISION,
// --atol X (--check: tolerance for probabilities / predictions; default golden_portable.json's, else 1e-4).
// Exit codes: 0 ok, 1 a --check mismatch, 2 a bad bundle, row or usage.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const USAGE = 'usage: node index.js BUNDLE_DIR [ROW ...] [--json] [--artifact FILE|PRECISION] '
  + '[--check [--atol X]]\n';
const TYPED = { float32: Float32Array, float64: Float64Array, int32: Int32Array, uint8: Uint8Array, int8: Int8Array };
const SEP = /[,\t]/; // CSV fields: commas (or tabs, as pasted from a spreadsheet)
const EXACT = new Set(['str', 'int64', 'int32', 'bool']); // compared exactly by --check

class UsageError extends Error {}

function parseArgs(argv) {
  const args = { bundle: null, rows: [], json: false, check: false, atol: null, artifact: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--json') args.json = true;
    else if (a === '--check') args.check = true;
    else if (a === '--atol') args.atol = Number(value());
    else if (a === '--artifact') args.artifact = value();
    else if (a === '-h' || a === '--help') { process.stdout.write(USAGE); process.exit(0); }
    else if (a === '--') { args.rows.push(...argv.slice(i + 1)); break; }
    else if (a.startsWith('--')) throw new UsageError(`unknown option ${a}`);
    else if (args.bundle === null) args.bundle = a;
    else args.rows.push(a);
  }
  if (args.bundle === null) throw new UsageError('missing BUNDLE_DIR (a seqdeploy run directory with manifest.json)');
  if (args.atol !== null && !(args.atol >= 0)) throw new UsageError('--atol must be a number >= 0');
  if (args.check && args.rows.length) throw new UsageError('--check runs golden_portable.json: give no rows with it');
  return args;
}

function readJson(file, what) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file} (${what}): ${e.code || e.message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${file} is not valid JSON (${e.message})`);
  }
}

// A file named by the manifest must stay inside the bundle directory.
function insideBundle(bundle, rel) {
  if (typeof rel !== 'string' || path.isAbsolute(rel) || rel.split(/[\\/]/).includes('..')) {
    throw new UsageError(`manifest names ${JSON.stringify(rel)}: expected a file name inside the bundle`);
  }
  return path.join(bundle, rel);
}

// The deployed artifact's portable graph: {file, sha256, inputs, outputs} (manifest schema 2).
function portableOf(manifest, artifact) {
  if (!Number.isInteger(manifest.schema_version) || manifest.schema_version > 2) {
    throw new UsageError(`manifest schema_version ${manifest.schema_version}: this client understands 1-2; update it`);
  }
  const want = artifact || manifest.deployment_artifact;
  const art = (manifest.artifacts || []).find((a) => a.file === want || a.precision === want || a.recipe === want);
  if (!art) {
    const have = (manifest.artifacts || []).map((a) => a.file).join(', ');
    throw new UsageError(`artifact ${JSON.stringify(want)} is not in the manifest (it lists ${have})`);
  }
  if (!art.portable || !art.portable.file) {
    throw new UsageError(`${art.file} has no portable graph in the manifest (the bundle predates it): `
      + 'rebuild the bundle with a current seqdeploy (`seqdeploy export RUN_DIR`)');
  }
  return { artifact: art.file, ...art.portable };
}

// Ops outside core ONNX and ai.onnx.ml (e.g. onnxruntime-extensions' ai.onnx.contrib string ops) need a
// custom-op library that onnxruntime-node cannot register: say so, and what to use instead (the manifest's
// `bindings` record, written by seqdeploy).
function refuseCustomOps(manifest, portable, binding) {
  // com.microsoft ops (quantized graphs) are built into every onnxruntime; ai.onnx.contrib ones are not
  const custom = (portable.contrib_ops || []).filter((op) => op.startsWith('ai.onnx.contrib:'));
  const rec = (manifest.bindings || []).find((b) => b.binding === binding);
  if (!custom.length) return; // decided per artifact; the note is the manifest's (deployed artifact) when it has one
  throw new UsageError(`${portable.file} cannot run here: `
    + (rec && rec.note ? rec.note : `it needs custom ops (${custom.join(', ')}) that onnxruntime-node cannot `
      + 'register; run the bundle with the Python runtime, or call `seqdeploy serve` over the Open Inference '
      + 'Protocol (HTTP/JSON)'));
}

// ---------------------------------------------------------------- raw rows -> tensors

function sizeOf(dims) {
  return dims.reduce((n, d) => n * d, 1);
}

function parseNumber(field, where) {
  const s = field.trim();
  const v = Number(s);
  if (s === '' || !Number.isFinite(v)) {
    throw new UsageError(`${where}: ${JSON.stringify(field)} is not a finite number`);
  }
  return v;
}

function looksLikeHeader(fields) {
  return fields.every((f) => f.trim() === '' || Number.isNaN(Number(f.trim()))); // names only, no numbers
}

// Rows of the numeric raw input (features, window, image): CSV lines of numbers, in the manifest's
// feature order; with a header row (stdin) columns are picked by name and others are ignored.
function numericFeed(input, rows, featureNames, allowHeader) {
  const dims = input.shape.slice(1);
  if (!dims.every((d) => Number.isInteger(d) && d > 0)) {
    throw new UsageError(`input ${input.name} has shape ${JSON.stringify(input.shape)}: expected fixed sizes`);
  }
  const width = sizeOf(dims);
  let order = null;
  if (allowHeader && rows.length && looksLikeHeader(rows[0].split(SEP))) {
    const header = rows[0].split(SEP).map((h) => h.trim());
    if (!featureNames) throw new UsageError(`first row ${JSON.stringify(rows[0].slice(0, 60))} is not numbers`);
    const missing = featureNames.filter((f) => !header.includes(f));
    if (missing.length) {
      throw new UsageError(`CSV header lacks feature column(s) ${JSON.stringify(missing.slice(0, 6))} `
        + `(expected the ${featureNames.length} features named in manifest.json)`);
    }
    order = featureNames.map((f) => header.indexOf(f));
    rows = rows.slice(1);
  }
  if (!rows.length) throw new UsageError('no rows: give CSV lines as arguments or on stdin');
  const data = new Float32Array(rows.length * width);
  rows.forEach((line, r) => {
    const fields = line.split(SEP);
    const where = `row ${r}`;
    if (order) {
      order.forEach((c, j) => {
        data[r * width + j] = parseNumber(fields[c] ?? '', `${where} column ${featureNames[j]}`);
      });
      return;
    }
    if (fields.length !== width) {
      const names = featureNames ? ` (${featureNames.slice(0, 4).join(', ')}, ...)` : '';
      throw new UsageError(`${where} has ${fields.length} values; expected ${width}${names}, `
        + 'separated by commas or tabs');
    }
    fields.forEach((f, j) => { data[r * width + j] = parseNumber(f, `${where} value ${j}`); });
  });
  return { dtype: input.dtype, shape: [rows.length, ...dims], data };
}

// Rows of a bundle with numeric and categorical columns (two raw inputs, `features` and `categories`):
// a header row names the columns (any order, extra columns ignored); without one, each line holds the
// numeric columns then the categorical ones, in manifest order. Categories are text, passed as they are
// (a value never seen in training goes to the model's out-of-vocabulary bucket).
function mixedFeeds(manifest, rows) {
  const pre = manifest.preprocessing || {};
  const num = pre.feature_names || [];
  const cat = pre.categorical_names || [];
  const all = [...num, ...cat];
  let order = null;
  if (rows.length) {
    const header = rows[0].split(SEP).map((h) => h.trim());
    if (all.every((name) => header.includes(name))) {
      order = all.map((name) => header.indexOf(name));
      rows = rows.slice(1);
    } else if (looksLikeHeader(header)) {
      const missing = all.filter((name) => !header.includes(name));
      throw new UsageError(`CSV header lacks column(s) ${JSON.stringify(missing.slice(0, 6))} `
        + `(expected ${JSON.stringify(all)})`);
    }
  }
  if (!rows.length) throw new UsageError('no rows: give CSV lines as arguments or on stdin');
  const features = new Float32Array(rows.length * num.length);
  const categories = [];
  rows.forEach((line, r) => {
    const fields = line.split(SEP);
    if (!order && fields.length !== all.length) {
      throw new UsageError(`row ${r} has ${fields.length} values; expected ${all.length} (${all.join(', ')}), `
        + 'separated by commas or tabs');
    }
    const pick = order ? order.map((i) => fields[i] ?? '') : fields;
    num.forEach((name, j) => { features[r * num.length + j] = parseNumber(pick[j], `row ${r} column ${name}`); });
    cat.forEach((name, j) => categories.push(pick[num.length + j]));
  });
  const feeds = { categories: { dtype: 'str', shape: [rows.length, cat.length], data: categories } };
  if (num.length) feeds.features = { dtype: 'float32', shape: [rows.length, num.length], data: features };
  return feeds;
}

function rawFeed(input, rows, manifest, fromStdin) {
  if (input.dtype === 'str') {
    if (!rows.length) throw new UsageError('no rows: give reviews as arguments or on stdin');
    return { dtype: 'str', shape: [rows.length], data: rows };
  }
  if (!TYPED[input.dtype]) throw new UsageError(`input ${input.name} has dtype ${input.dtype}: not supported here`);
  const names = manifest.preprocessing && manifest.preprocessing.feature_names;
  return numericFeed(input, rows, Array.isArray(names) ? names : null, fromStdin);
}

function toTensor(ort, entry, name) {
  const { dtype, shape } = entry;
  const flat = Array.isArray(entry.data) || ArrayBuffer.isView(entry.data) ? entry.data : [];
  if (dtype === 'str') return new ort.Tensor('string', Array.from(flat, String), shape);
  if (dtype === 'int64') return new ort.Tensor('int64', BigInt64Array.from(flat, (v) => BigInt(v)), shape);
  if (dtype === 'bool') return new ort.Tensor('bool', Uint8Array.from(flat, (v) => (v ? 1 : 0)), shape);
  if (!TYPED[dtype]) throw new UsageError(`${name} has dtype ${dtype}: not supported by this client`);
  return new ort.Tensor(dtype, TYPED[dtype].from(flat), shape);
}

// An onnxruntime output as {dtype, shape, data} (the golden_portable.json format).
function plain(tensor) {
  const dtype = tensor.type === 'string' ? 'str' : tensor.type;
  const data = dtype === 'str' ? Array.from(tensor.data) : Array.from(tensor.data, Number);
  return { dtype, shape: Array.from(tensor.dims), data };
}

// ---------------------------------------------------------------- answers

function describe(outputs, n, labels) {
  const lines = [];
  for (let i = 0; i < n; i++) {
    if (outputs.prediction) {
      const p = outputs.prediction;
      const per = p.data.length / n;
      lines.push(`prediction ${p.data.slice(i * per, (i + 1) * per).map((v) => v.toPrecision(6)).join(' ')}`);
      continue;
    }
    const probs = outputs.probabilities;
    const c = probs.shape[1];
    const row = probs.data.slice(i * c, (i + 1) * c);
    const label = outputs.label ? outputs.label.data[i] : String(outputs.class_id.data[i]);
    const names = Array.isArray(labels) && labels.length === c ? labels : row.map((_, j) => `p[${j}]`);
    lines.push(`${label}\t${row.map((v, j) => `${names[j]}=${v.toFixed(4)}`).join(' ')}`);
  }
  return lines.join('\n') + '\n';
}

function compare(name, want, got, atol) {
  if (!got) return `${name}: missing from the model's outputs  FAIL`;
  if (JSON.stringify(want.shape) !== JSON.stringify(got.shape)) {
    return `${name}: shape ${JSON.stringify(got.shape)}, expected ${JSON.stringify(want.shape)}  FAIL`;
  }
  if (EXACT.has(want.dtype)) {
    const bad = want.data.findIndex((v, i) => String(v) !== String(got.data[i]));
    return bad < 0 ? `${name}: ${want.data.length} values equal  ok`
      : `${name}: [${bad}] = ${JSON.stringify(got.data[bad])}, expected ${JSON.stringify(want.data[bad])}  FAIL`;
  }
  let maxErr = 0;
  let bad = 0;
  want.data.forEach((v, i) => {
    const err = Math.abs(got.data[i] - v);
    maxErr = Math.max(maxErr, err);
    if (!(err <= atol)) bad++;
  });
  return `${name}: max abs error ${maxErr.toExponential(2)} (atol ${atol})  `
    + (bad ? `FAIL (${bad} of ${want.data.length} values)` : 'ok');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    throw new UsageError(`onnxruntime-node is not installed: run \`npm install --ignore-scripts\` in ${__dirname}`);
  }
  const bundle = path.resolve(args.bundle);
  const manifest = readJson(path.join(bundle, 'manifest.json'), 'the bundle manifest');
  const portable = portableOf(manifest, args.artifact);
  refuseCustomOps(manifest, portable, 'node');
  const bytes = fs.readFileSync(insideBundle(bundle, portable.file));
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  if (sha !== portable.sha256) {
    throw new UsageError(`${portable.file}: sha256 ${sha.slice(0, 16)}... differs from the manifest's `
      + `${String(portable.sha256).slice(0, 16)}...; copy the bundle again`);
  }
  const session = await ort.InferenceSession.create(bytes, {
    intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  });

  let feeds;
  let golden = null;
  if (args.check) {
    golden = readJson(insideBundle(bundle, 'golden_portable.json'), 'raw inputs and expected answers');
    feeds = golden.inputs || {};
  } else {
    const rows = args.rows.length ? args.rows
      : fs.readFileSync(0, 'utf8').split(/\r?\n/).filter((l) => l.trim() !== '');
    if (manifest.preprocessing && manifest.preprocessing.kind === 'categorical') {
      feeds = mixedFeeds(manifest, rows);
    } else {
      if (session.inputNames.length !== 1) {
        throw new UsageError(`${portable.file} takes ${session.inputNames.length} inputs; rows feed exactly one`);
      }
      const input = (portable.inputs || []).find((t) => t.name === session.inputNames[0]);
      if (!input) throw new UsageError(`manifest does not describe input ${session.inputNames[0]}`);
      feeds = { [input.name]: rawFeed(input, rows, manifest, !args.rows.length) };
    }
  }
  const tensors = {};
  for (const name of session.inputNames) {
    if (!feeds[name]) throw new UsageError(`no values for input ${name}`);
    tensors[name] = toTensor(ort, feeds[name], name);
  }
  const results = await session.run(tensors);
  const outputs = {};
  for (const name of session.outputNames) outputs[name] = plain(results[name]);
  const n = tensors[session.inputNames[0]].dims[0];

  if (!args.check) {
    process.stdout.write(args.json ? JSON.stringify({ file: portable.file, outputs }) + '\n'
      : describe(outputs, n, manifest.labels));
    return 0;
  }
  const atol = args.atol ?? (golden.tolerance && golden.tolerance.atol) ?? 1e-4;
  const lines = Object.entries(golden.outputs || {}).map(([name, want]) => compare(name, want, outputs[name], atol));
  if (!lines.length) throw new UsageError('golden_portable.json lists no outputs');
  const ok = lines.every((l) => l.endsWith('ok'));
  if (args.json) process.stdout.write(JSON.stringify({ file: portable.file, ok, lines, outputs }) + '\n');
  else {
    const summary = ok ? `${n} rows match golden_portable.json` : 'MISMATCH';
    process.stdout.write(lines.join('\n') + `\n${portable.file}: ${summary}\n`);
  }
  return ok ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  process.stderr.write(`error: ${e instanceof UsageError ? e.message : e.stack || e}\n`);
  process.exit(2);
});
