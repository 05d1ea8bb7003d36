// torch.save zip files: what PyTorch writes (fp16/bf16 storages, strided views, checkpoint dicts,
// DDP "module." prefixes) reads back exactly; what we write, torch.load reads back exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { readTorchStateDict } from '../src/formats/torch.ts';
import { writeTorchStateDict } from '../src/formats/torch-write.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-torch-'));
const PY = '/usr/bin/python3';
const hasTorch = fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const skipNoTorch = hasTorch ? false : `${PY} with torch (Debian python3-torch) not installed`;

test('round trip through our writer is exact and keeps key order', () => {
  const file = path.join(tmp, 'rt.pth');
  const a = Float32Array.from({ length: 24 }, (_, i) => Math.sin(i) * 1e3);
  writeTorchStateDict(file, new Map<string, { shape: number[]; data: Float32Array | BigInt64Array }>([
    ['z.weight', { shape: [2, 3, 4], data: a }],
    ['a.num_batches_tracked', { shape: [], data: BigInt64Array.of(7n) }],
  ]));
  const back = readTorchStateDict(file);
  assert.deepEqual([...back.keys()], ['z.weight', 'a.num_batches_tracked']);
  assert.deepEqual(back.get('z.weight')!.shape, [2, 3, 4]);
  assert.deepEqual(Array.from(back.get('z.weight')!.data as Float32Array), Array.from(a));
  assert.equal((back.get('a.num_batches_tracked')!.data as BigInt64Array)[0], 7n);
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => /\.(partial|old|commit)-|\.tmp-/.test(f)), []);
});

test('reads what PyTorch writes: fp16, bf16, strided views, checkpoint dicts, module. prefixes', { skip: skipNoTorch }, () => {
  const file = path.join(tmp, 'torch.pt');
  const script = `
import torch
base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
sd = {'module.half': base.half(), 'module.bf': base.bfloat16(), 'module.t': base.t(), 'module.sl': base[1:3, ::2],
      'module.i': torch.arange(5), 'module.p': torch.nn.Parameter(base[0])}
torch.save({'state_dict_backbone': sd, 'epoch': 3}, ${JSON.stringify(file)})
`;
  const r = spawnSync(PY, ['-c', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const sd = readTorchStateDict(file);
  const base = Array.from({ length: 24 }, (_, i) => Math.fround(i / 7));
  const at = (i: number, j: number) => base[i * 6 + j]!;
  assert.deepEqual([...sd.keys()], ['half', 'bf', 't', 'sl', 'i', 'p']);
  const half = sd.get('half')!.data as Float32Array;
  half.forEach((v, i) => assert.ok(Math.abs(v - base[i]!) <= 2e-3 * Math.max(1, Math.abs(base[i]!)), `half[${i}]`));
  const bf = sd.get('bf')!.data as Float32Array;
  bf.forEach((v, i) => assert.ok(Math.abs(v - base[i]!) <= 1.6e-2 * Math.max(1, Math.abs(base[i]!)), `bf[${i}]`));
  assert.deepEqual(sd.get('t')!.shape, [6, 4]);
  assert.deepEqual(Array.from(sd.get('t')!.data as Float32Array), Array.from({ length: 24 }, (_, k) => at(k % 4, Math.floor(k / 4))));
  assert.deepEqual(Array.from(sd.get('sl')!.data as Float32Array), [at(1, 0), at(1, 2), at(1, 4), at(2, 0), at(2, 2), at(2, 4)]);
  assert.deepEqual(Array.from(sd.get('i')!.data as BigInt64Array), [0n, 1n, 2n, 3n, 4n]);
  assert.deepEqual(Array.from(sd.get('p')!.data as Float32Array), base.slice(0, 6));
});

test('torch.load reads what we write, bit for bit', { skip: skipNoTorch }, () => {
  const file = path.join(tmp, 'ours.pth');
  const w = Float32Array.from({ length: 2 * 3 * 3 * 3 }, (_, i) => (i - 27) / 13);
  writeTorchStateDict(file, new Map<string, { shape: number[]; data: Float32Array | BigInt64Array }>([
    ['conv.weight', { shape: [2, 3, 3, 3], data: w }],
    ['bn.num_batches_tracked', { shape: [], data: BigInt64Array.of(0n) }],
  ]));
  const script = `
import torch, json
sd = torch.load(${JSON.stringify(file)})
m = torch.nn.Conv2d(3, 2, 3, bias=False)
m.load_state_dict({'weight': sd['conv.weight']}, strict=True)
print(json.dumps([list(sd.keys()), sd['conv.weight'].flatten().tolist(), str(sd['bn.num_batches_tracked'].dtype)]))
`;
  const r = spawnSync(PY, ['-c', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [keys, values, dtype] = JSON.parse(r.stdout);
  assert.deepEqual(keys, ['conv.weight', 'bn.num_batches_tracked']);
  assert.deepEqual(values, Array.from(w));
  assert.equal(dtype, 'torch.int64');
});

test('errors name the file: missing, not a zip, legacy format, truncated', () => {
  const missing = path.join(tmp, 'missing.pth');
  assert.throws(() => readTorchStateDict(missing), /missing\.pth: cannot read: ENOENT/);
  const legacy = path.join(tmp, 'legacy.pth');
  fs.writeFileSync(legacy, Uint8Array.of(0x80, 2, 0x8a, 0x0a));
  assert.throws(() => readTorchStateDict(legacy), /legacy\.pth: not a PyTorch zip checkpoint \(this looks like the legacy/);
  const good = path.join(tmp, 'good.pth');
  writeTorchStateDict(good, new Map([['w', { shape: [1000], data: new Float32Array(1000) }]]));
  const cut = path.join(tmp, 'cut.pth');
  fs.writeFileSync(cut, fs.readFileSync(good).subarray(0, 2000));
  assert.throws(() => readTorchStateDict(cut), /cut\.pth: corrupt or truncated zip archive/);
});
