#!/usr/bin/env node
// Check a seqdeploy bundle from Node: load manifest.json, verify the deployment
// artifact's sha256, run it with onnxruntime-node on golden.json's inputs and
// compare with golden.json's expected outputs.
//
//   node index.js path/to/bundle [--atol 1e-4] [--rtol 1e-3] [--artifact model.onnx]
//
// Exit codes: 0 all outputs match, 1 a mismatch, 2 a bad bundle or usage.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const NP_TO_ORT = {
  float32: 'float32', float64: 'float64', float16: 'float16', int32: 'int32', int64: 'int64',
  int8: 'int8', uint8: 'uint8', int16: 'int16', bool: 'bool',
};
const TYPED = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int8: Int8Array,
  uint8: Uint8Array, int16: Int16Array,
};

function fail(code, msg) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const args = { bundle: null, atol: null, rtol: 1e-3, artifact: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--atol') args.atol = Number(argv[++i]);
    else if (a === '--rtol') args.rtol = Number(argv[++i]);
    else if (a === '--artifact') args.artifact = argv[++i];
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: node index.js BUNDLE_DIR [--atol X] [--rtol X] [--artifact FILE]\n');
      process.exit(0);
    } else if (!args.bundle) args.bundle = a;
    else fail(2, `unexpected argument ${a}`);
  }
  if (!args.bundle) fail(2, 'missing BUNDLE_DIR (a seqdeploy run directory with manifest.json and golden.json)');
  return args;
}

// A path from the manifest must stay inside the bundle directory.
function insideBundle(bundle, rel) {
  if (typeof rel !== 'string' || path.isAbsolute(rel) || rel.split(/[\\/]/).includes('..')) {
    fail(2, `manifest names ${JSON.stringify(rel)}: expected a file name inside the bundle`);
  }
  return path.join(bundle, rel);
}

function readJson(file, what) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    fail(2, `cannot read ${file} (${what}): ${e.message}`);
  }
}

// golden.json entries: {"dtype": "float32", "shape": [n, ...], "data": nested lists}
function flatten(x, out) {
  if (Array.isArray(x)) { for (const v of x) flatten(v, out); } else out.push(x);
  return out;
}

function toTensor(ort, entry, name) {
  const dtype = NP_TO_ORT[entry.dtype];
  if (!dtype) fail(2, `golden ${name} has dtype ${entry.dtype} (expected a numeric dtype)`);
  const flat = flatten(entry.data, []);
  let data;
  if (dtype === 'int64') data = BigInt64Array.from(flat.map((v) => BigInt(v)));
  else if (dtype === 'bool') data = Uint8Array.from(flat.map((v) => (v ? 1 : 0)));
  else if (dtype === 'float16') fail(2, `golden ${name} is float16: not supported by this client`);
  else data = TYPED[dtype].from(flat);
  return new ort.Tensor(dtype, data, entry.shape);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (e) {
    fail(2, `onnxruntime-node is not installed here: run \`npm install\` in ${__dirname} (${e.message})`);
  }
  const bundle = path.resolve(args.bundle);
  const manifest = readJson(path.join(bundle, 'manifest.json'), 'the bundle manifest');
  if (!Number.isInteger(manifest.schema_version) || manifest.schema_version > 1) {
    fail(2, `manifest schema_version ${manifest.schema_version}: this client understands 1; update it`);
  }
  const artName = args.artifact || manifest.deployment_artifact;
  const art = (manifest.artifacts || []).find((a) => a.file === artName || a.precision === artName);
  if (!art) fail(2, `artifact ${artName} is not in the manifest`);
  const modelPath = insideBundle(bundle, art.file);
  const bytes = fs.readFileSync(modelPath);
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  if (sha !== art.sha256) fail(2, `${art.file}: sha256 ${sha.slice(0, 16)}... does not match the manifest`);

  const golden = readJson(insideBundle(bundle, 'golden.json'), 'written by seqdeploy verify');
  const session = await ort.InferenceSession.create(bytes, {
    intraOpNumThreads: 1, interOpNumThreads: 1, graphOptimizationLevel: 'all', executionMode: 'sequential',
  });
  const feeds = {};
  for (const name of session.inputNames) {
    const entry = golden[`input__${name}`];
    if (!entry) fail(2, `golden.json has no input__${name}`);
    feeds[name] = toTensor(ort, entry, `input__${name}`);
  }
  // Quantized artifacts are compared with the fp32 golden outputs: loosen the default tolerance.
  const atol = args.atol ?? (art.precision === 'float32' ? 1e-4 : 5e-2);
  const results = await session.run(feeds);
  let ok = true;
  let compared = 0;
  for (const name of session.outputNames) {
    const entry = golden[`output__${name}`];
    if (!entry) { process.stdout.write(`${name}: no expected values in golden.json, skipped\n`); continue; }
    compared++;
    const want = flatten(entry.data, []);
    const got = Array.from(results[name].data, Number);
    if (got.length !== want.length) {
      process.stdout.write(`${name}: ${got.length} values, expected ${want.length}  FAIL\n`);
      ok = false;
      continue;
    }
    let maxErr = 0;
    let bad = 0;
    for (let i = 0; i < got.length; i++) {
      const err = Math.abs(got[i] - want[i]);
      maxErr = Math.max(maxErr, err);
      if (!(err <= atol + args.rtol * Math.abs(want[i]))) bad++;
    }
    const status = bad === 0 ? 'ok' : `FAIL (${bad} values out of tolerance)`;
    process.stdout.write(`${name}: max abs error ${maxErr.toExponential(2)} (atol ${atol}, rtol ${args.rtol})  ${status}\n`);
    if (bad) ok = false;
  }
  if (compared === 0) fail(2, `golden.json has no output__<name> for any model output (${session.outputNames})`);
  process.stdout.write(ok ? `${art.file}: all outputs match golden.json\n` : `${art.file}: MISMATCH\n`);
  process.exit(ok ? 0 : 1);
}

main().catch((e) => fail(2, e.stack || String(e)));
