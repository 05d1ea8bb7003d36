// Inputs the mutation fuzzer found crashing the readers (deep errors without the file name), kept as
// plain cases: each must now be an ArcfaceError naming the file and where in it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { zipSync } from 'fflate';
import * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../src/errors.ts';
import { packRecord } from '../src/data/irheader.ts';
import { RecordIOWriter, writeIdx } from '../src/data/recordio.ts';
import { RecordIOSource } from '../src/data/rec-source.ts';
import { decodeImage } from '../src/data/decode.ts';
import { PickleGlobal, PyPersistentId, PyReduce, PyTuple, pickle } from '../src/formats/pickle.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { importOnnx } from '../src/convert/onnx/index.ts';
import { onnx } from '../src/convert/onnx/reader.ts';
import { loadConfig } from '../src/train/config.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-fuzz-reg-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Asserts an ArcfaceError whose message names `file` and matches `also`. */
async function rejectsNaming(fn: () => unknown, file: string, also: RegExp): Promise<void> {
  await assert.rejects(async () => fn(), (e: Error) => {
    assert.ok(e instanceof ArcfaceError, `expected an ArcfaceError, got ${e.name}: ${e.message}`);
    assert.ok(e.message.includes(file), `message does not name ${file}: ${e.message}`);
    assert.match(e.message, also);
    return true;
  });
}

function writePack(name: string, payloads: Uint8Array[]): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const w = new RecordIOWriter(path.join(dir, 'train.rec'));
  const entries = payloads.map((p, key) => ({ key, offset: w.write(p) }));
  w.close();
  writeIdx(path.join(dir, 'train.idx'), entries);
  return dir;
}

const JPEGISH = new Uint8Array([0xff, 0xd8, 0xff, 0xd9]);

test('RecordIO: a record shorter than its label array or its IRHeader is an error naming the key', async () => {
  const full = packRecord({ label: [3, 1] }, JPEGISH);
  const dir = writePack('short-label', [packRecord({ label: 0 }, JPEGISH), full.subarray(0, 28), full.subarray(0, 2)]);
  const src = RecordIOSource.open(dir);
  try {
    assert.equal(src.label(0), 0);
    await rejectsNaming(() => src.label(1), path.join(dir, 'train.rec'), /key 1: IRHeader says 2 labels but the record has only 28 bytes/);
    await rejectsNaming(() => src.label(2), path.join(dir, 'train.rec'), /key 2: record of 2 bytes is shorter than the 24-byte IRHeader/);
  } finally {
    src.close();
  }
});

test('RecordIO: a meta record whose label is Infinity or past the record count is refused before allocating', async () => {
  for (const [name, a] of [['meta-inf', Infinity], ['meta-huge', 1e9], ['meta-nan', NaN]] as const) {
    const dir = writePack(name, [packRecord({ label: [a, a + 1] }), packRecord({ label: 0 }, JPEGISH)]);
    await rejectsNaming(() => RecordIOSource.open(dir), path.join(dir, 'train.rec'), /key 0, byte offset 0: meta record label/);
  }
});

test('.pth: a tensor whose pickled shape is not a tuple is an error naming the file', async () => {
  const rebuild = new PickleGlobal('torch._utils', '_rebuild_tensor_v2');
  const od = new PickleGlobal('collections', 'OrderedDict');
  const pid = (key: string) => new PyPersistentId(new PyTuple(['storage', new PickleGlobal('torch', 'FloatStorage'), key, 'cpu', 4]));
  const items = new Map<unknown, unknown>([
    ['fc.weight', new PyReduce(rebuild, [pid('0'), 0, 5, new PyTuple([1]), false, new PyReduce(od, [])])],
  ]);
  const file = path.join(tmp, 'bad-shape.pth');
  fs.writeFileSync(
    file,
    zipSync({
      'bad/data.pkl': [pickle(new PyReduce(od, [], undefined, items), { protocol: 2 }), { level: 0 }],
      'bad/data/0': [new Uint8Array(16), { level: 0 }],
    }),
  );
  await rejectsNaming(() => importTorch(file), file, /malformed offset\/shape\/stride/);
});

test('config: prototype keys are unknown keys; a network that builds no backbone names the config file', async () => {
  const write = (name: string, obj: object) => {
    const f = path.join(tmp, name);
    fs.writeFileSync(f, JSON.stringify({ extends: 'base', ...obj }));
    return f;
  };
  const proto = write('proto.json', JSON.parse('{"toString": 1, "constructor": "x"}'));
  await rejectsNaming(() => loadConfig(proto), proto, /unknown key "toString"[\s\S]*unknown key "constructor"/);
  const net = write('net.json', { network: 'toString' });
  await rejectsNaming(() => loadConfig(net), net, /key "network": unknown network "toString"/);
  const layers = write('layers.json', { network: 'iresnet', layers: null });
  await rejectsNaming(() => loadConfig(layers), layers, /key "network": network "iresnet" needs `layers`/);
  const zero = write('zero.json', { network: 'iresnet', layers: [0, 1, 1, 1] });
  await rejectsNaming(() => loadConfig(zero), zero, /layers entries must be between 1 and 1024/);
});

test('images: undecodable bytes are an ArcfaceError naming the file', async () => {
  await rejectsNaming(() => decodeImage(new Uint8Array([0xff, 0xd8, 1, 2, 3]), '/x/face.jpg'), '/x/face.jpg', /cannot decode image/);
});

test('ONNX: a Conv dilations attribute of the wrong length or type names the file and the node', { skip: skipUnlessFixture('mbf', 'backbone.onnx') }, async () => {
  await tf.setBackend('cpu');
  const bytes = fs.readFileSync(sharedFixture('mbf', 'backbone.onnx')!);
  const cases: [string, object][] = [
    ['dil-len', { name: 'dilations', type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 1, 1] }],
    ['dil-zero', { name: 'dilations', type: onnx.AttributeProto.AttributeType.INTS, ints: [0, 1] }],
    ['dil-float', { name: 'dilations', type: onnx.AttributeProto.AttributeType.FLOAT, f: 1.5 }],
  ];
  for (const [name, attr] of cases) {
    const model = onnx.ModelProto.decode(bytes);
    const conv = model.graph!.node!.find((n) => n.opType === 'Conv')!;
    conv.attribute = (conv.attribute ?? []).filter((a) => a.name !== 'dilations');
    conv.attribute.push(onnx.AttributeProto.create(attr));
    const file = path.join(tmp, `${name}.onnx`);
    fs.writeFileSync(file, onnx.ModelProto.encode(model).finish());
    await rejectsNaming(() => importOnnx(file), file, new RegExp(`node "${conv.name}" \\(Conv\\): attribute dilations`));
  }
});
