// insightface .pth fixtures -> tfjs: every tap and the output within the fixtures' bound; saved as a tfjs
// layers model and reloaded in a fresh process -> the same output; bad input -> clear errors, no output.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { importTorch } from '../src/convert/import-torch.ts';
import { readNpy } from '../src/formats/npy.ts';
import { readTorchStateDict } from '../src/formats/torch.ts';
import { writeTorchStateDict } from '../src/formats/torch-write.ts';
import { toStateDict } from '../src/convert/torch-mapping.ts';
import { tapModel } from '../src/models/taps.ts';
import { saveModel } from '../src/models/io.ts';
import { assertFixtureClose, maxAbsDiff, nhwcToNchw } from './helpers/compare.ts';
import { REPO_ROOT, sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';

const TAPS: Record<string, string[]> = {
  iresnet_tiny: ['prelu', 'layer1', 'layer2', 'layer3', 'layer4', 'bn2', 'fc', 'features'],
  mbf: ['conv_sep', 'features'],
};
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-import-'));

before(async () => {
  await initBackend('wasm', { quiet: true });
});

function fixtureInput(dir: string): tf.Tensor4D {
  const inp = readNpy(path.join(dir, 'input_nchw.npy'));
  return tf.tidy(() => tf.tensor(inp.data as Float32Array, inp.shape).transpose([0, 2, 3, 1]) as tf.Tensor4D);
}

function runCli(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, ARCFACE_BACKEND: 'wasm' },
  });
}

for (const name of ['iresnet_tiny', 'mbf']) {
  test(`${name}: backbone.pth reproduces every tap and output.npy`, { skip: skipUnlessFixture(name) }, () => {
    const dir = sharedFixture(name)!;
    const { model } = importTorch(path.join(dir, 'backbone.pth'));
    const x = fixtureInput(dir);
    const taps = tapModel(model, TAPS[name]!);
    const outs = taps.predict(x.slice(0, 1)) as tf.Tensor[];
    TAPS[name]!.forEach((tap, i) => {
      const expected = readNpy(path.join(dir, `tap_${tap}.npy`));
      const got = outs[i]!;
      const data = got.rank === 4 ? nhwcToNchw(got.dataSync(), got.shape) : got.dataSync();
      assert.deepEqual(expected.shape.reduce((a, b) => a * b, 1), data.length, `${tap} size`);
      assertFixtureClose(data, expected.data as Float32Array, `${name} tap_${tap}`);
    });
    const y = model.predict(x) as tf.Tensor;
    assertFixtureClose(y.dataSync(), readNpy(path.join(dir, 'output.npy')).data as Float32Array, `${name} output`);
    tf.dispose([x, y, ...outs]);
    model.dispose();
  });

  test(`${name}: saved tfjs layers model reloads in a fresh process with the same output`, { skip: skipUnlessFixture(name) }, async () => {
    const dir = sharedFixture(name)!;
    const { model, spec } = importTorch(path.join(dir, 'backbone.pth'));
    const out = path.join(tmp, `${name}-tfjs`);
    await saveModel(model, out, spec);
    const x = fixtureInput(dir);
    const here = (model.predict(x) as tf.Tensor).dataSync();
    // The child loads with plain tf.loadLayersModel; IResNet needs nothing from this package, mbf its
    // registered GroupedConv2D layer (imported through the package's model module).
    const register = name === 'mbf' ? `await import(${JSON.stringify(path.join(REPO_ROOT, 'src/models/grouped-conv.ts'))});` : '';
    const child = `
      import * as tf from '@tensorflow/tfjs';
      import fs from 'node:fs';
      ${register}
      const dir = ${JSON.stringify(out)};
      const json = JSON.parse(fs.readFileSync(dir + '/model.json', 'utf8'));
      const w = fs.readFileSync(dir + '/' + json.weightsManifest[0].paths[0]);
      const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology,
        weightSpecs: json.weightsManifest[0].weights, weightData: w.buffer.slice(w.byteOffset, w.byteOffset + w.byteLength) }));
      const x = JSON.parse(fs.readFileSync(0, 'utf8'));
      const y = model.predict(tf.tensor(x.data, x.shape));
      process.stdout.write(JSON.stringify(Array.from(y.dataSync())));
    `;
    const r = spawnSync(process.execPath, [...(register ? ['--import', 'tsx'] : []), '--input-type=module', '-e', child], {
      cwd: REPO_ROOT,
      input: JSON.stringify({ data: Array.from(x.dataSync()), shape: x.shape }),
      encoding: 'utf8',
      maxBuffer: 1 << 26,
    });
    assert.equal(r.status, 0, r.stderr);
    const there = JSON.parse(r.stdout) as number[];
    assert.ok(maxAbsDiff(there, here) <= 1e-4 * Math.max(1, ...here.map(Math.abs)), 'reloaded output differs');
    x.dispose();
    model.dispose();
  });
}

test('CLI import infers iresnet_tiny with no flags', { skip: skipUnlessFixture('iresnet_tiny') }, () => {
  const out = path.join(tmp, 'cli-tiny');
  const r = runCli(['import', '--from', sharedFixture('iresnet_tiny', 'backbone.pth')!, '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.deepEqual([summary.network, summary.embeddingSize, summary.layers, summary.parameters], ['iresnet', 64, [1, 1, 1, 1], 6511232]);
  assert.ok(fs.existsSync(path.join(out, 'model.json')) && fs.existsSync(path.join(out, 'weights.bin')));
  assert.match(r.stderr, /using the wasm backend/);
});

test('bad input: truncated .pth, wrong --network, not a backbone', { skip: skipUnlessFixture('mbf') }, () => {
  const pth = fs.readFileSync(sharedFixture('mbf', 'backbone.pth')!);
  const truncated = path.join(tmp, 'truncated.pth');
  fs.writeFileSync(truncated, pth.subarray(0, Math.floor(pth.length / 2)));
  const cases: [string[], RegExp][] = [
    [['--from', truncated], /truncated\.pth: corrupt or truncated zip archive/],
    [['--from', sharedFixture('mbf', 'backbone.pth')!, '--network', 'r50'], /backbone\.pth: the checkpoint does not fit the model:[^]*missing keys[^]*holds network "mbf" with blocks \[1,4,6,2\]/],
    [['--from', sharedFixture('pairs_py3.bin')!], /pairs_py3\.bin: not a PyTorch zip checkpoint/],
    [['--from', path.join(tmp, 'nope.pth')], /nope\.pth: no such file/],
  ];
  for (const [args, message] of cases) {
    const out = path.join(tmp, 'should-not-exist');
    const r = runCli(['import', ...args, '--out', out]);
    assert.notEqual(r.status, 0, `exit code for ${args.join(' ')}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(fs.existsSync(out), false, 'no output directory');
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => /\.(partial|old|commit)-|\.tmp-|\.lock$/.test(f)), [], 'no temporary leftovers');
  }
});

test('a state dict that is not a backbone names the problem', () => {
  const file = path.join(tmp, 'head.pth');
  // A Partial FC weight alone: a real torch file, but no backbone in it.
  writeTorchStateDict(file, new Map([['weight', { shape: [10, 16], data: new Float32Array(160) }]]));
  const r = runCli(['import', '--from', file, '--out', path.join(tmp, 'o2')]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /head\.pth: not an insightface IResNet or MobileFaceNet state dict \(first keys: weight\)/);
  assert.equal(fs.existsSync(path.join(tmp, 'o2')), false);
});

for (const name of ['iresnet_tiny', 'mbf']) {
  test(`${name}: .pth export of the imported fixture equals the fixture, and imports back to the same weights`, { skip: skipUnlessFixture(name) }, () => {
    const pth = sharedFixture(name, 'backbone.pth')!;
    const { model } = importTorch(pth);
    const out = path.join(tmp, `${name}-export.pth`);
    writeTorchStateDict(out, toStateDict(model));
    const original = readTorchStateDict(pth);
    const exported = readTorchStateDict(out);
    assert.deepEqual([...exported.keys()].sort(), [...original.keys()].sort());
    for (const [key, t] of original) {
      const e = exported.get(key)!;
      assert.deepEqual(e.shape, t.shape, key);
      if (key.endsWith('num_batches_tracked')) continue; // a counter, written as 0
      assert.deepEqual(Array.from(e.data as Float32Array), Array.from(t.data as Float32Array), key);
    }
    const { model: again } = importTorch(out);
    const a = model.getWeights();
    const b = again.getWeights();
    assert.equal(a.length, b.length);
    a.forEach((w, i) => assert.deepEqual(Array.from(w.dataSync()), Array.from(b[i]!.dataSync())));
    model.dispose();
    again.dispose();
  });
}
