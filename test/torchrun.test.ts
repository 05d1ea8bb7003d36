// arcface_torch under torchrun: the real two-rank run in ../shared/fixtures/torch_run resumes here exactly,
// continues as the reference did, and goes back to its own files tensor for tensor.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { unzipSync } from 'fflate';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { readNpy } from '../src/formats/npy.ts';
import { readTorchObject, readTorchStateDict, type TorchTensor } from '../src/formats/torch.ts';
import { loadConfig } from '../src/train/config.ts';
import { PolynomialLRWarmup } from '../src/train/lr-schedule.ts';
import { TorchOptimizer } from '../src/train/optimizers.ts';
import { trainableVariables } from '../src/train/forward.ts';
import { PartialFC } from '../src/losses/partial-fc.ts';
import { toStateDict } from '../src/convert/torch-mapping.ts';
import { readTorchrun } from '../src/convert/torchrun/read.ts';
import { shardLayout, torchKeyOrder, torchParams } from '../src/convert/torchrun/layout.ts';
import { torchrunToContents, type TorchrunContents } from '../src/convert/torchrun/state.ts';
import { configFromPy, parseConfigPy } from '../src/convert/torchrun/config-py.ts';
import { exportTorchrun } from '../src/convert/torchrun/export.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';
import { ddpStep, toHalf } from './helpers/ddp-step.ts';

const RUN = sharedFixture('torch_run');
const noRun = skipUnlessFixture('torch_run');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-torchrun-'));

before(async () => {
  await initBackend('cpu', { quiet: true });
});

function resumeFixture(): TorchrunContents {
  const run = readTorchrun(path.join(RUN!, 'run'));
  const base = loadConfig('base', configFromPy(parseConfigPy(run.configPy!), run.worldSize));
  return torchrunToContents(run, base);
}

const bits = (a: ArrayLike<number | bigint>) => Array.from(a as ArrayLike<number>, (v) => String(v));

test('PartialFC_V2 shard layout, uneven splits included', () => {
  assert.deepEqual(shardLayout(10, 2), [
    { rank: 0, classStart: 0, numLocal: 5 },
    { rank: 1, classStart: 5, numLocal: 5 },
  ]);
  assert.deepEqual(
    shardLayout(10, 3).map((s) => [s.classStart, s.numLocal]),
    [[0, 4], [4, 3], [7, 3]],
  );
  assert.deepEqual(
    shardLayout(93431, 8).map((s) => s.numLocal),
    [11679, 11679, 11679, 11679, 11679, 11679, 11679, 11678],
  );
  assert.throws(() => shardLayout(3, 4), /3 classes cannot be split over 4 ranks/);
});

test('torch key order: an IResNet block registers downsample after bn3', () => {
  assert.deepEqual(torchKeyOrder(['conv1.weight', 'layer1.0.bn1.weight', 'layer1.0.downsample.0.weight', 'layer1.0.downsample.1.weight', 'layer1.0.bn3.weight', 'layer1.1.bn1.weight']), [
    'conv1.weight',
    'layer1.0.bn1.weight',
    'layer1.0.bn3.weight',
    'layer1.0.downsample.0.weight',
    'layer1.0.downsample.1.weight',
    'layer1.1.bn1.weight',
  ]);
});

test('resuming the two-rank fixture loads every tensor exactly: backbone, both shards in order, momentum, lr, step', { skip: noRun }, () => {
  const c = resumeFixture();
  try {
    const ck = [0, 1].map((r) => readTorchObject(path.join(RUN!, 'run', `checkpoint_gpu_${r}.pt`)) as Map<string, unknown>);
    const sd0 = ck[0]!.get('state_dict_backbone') as Map<string, TorchTensor>;
    // backbone: every weight and running statistic of rank 0, bit for bit
    const ours = toStateDict(c.backbone);
    let compared = 0;
    for (const [k, t] of sd0) {
      if (k.endsWith('num_batches_tracked')) continue;
      assert.deepEqual(bits(ours.get(k)!.data), bits(t.data), k);
      compared++;
    }
    assert.equal(compared, 283);
    // centres: rank 0's rows then rank 1's
    const shards = ck.map((m) => ((m.get('state_dict_softmax_fc') as Map<string, TorchTensor>).get('weight')!.data as Float32Array));
    assert.deepEqual(c.head.shape, [10, 128]);
    assert.deepEqual(bits(c.head.data), bits([...shards[0]!, ...shards[1]!]));
    // momentum buffers: param ids follow backbone.parameters() then the centres
    const opt0 = (ck[0]!.get('state_optimizer') as Map<string, unknown>).get('state') as Map<number, Map<string, TorchTensor>>;
    const opt1 = (ck[1]!.get('state_optimizer') as Map<string, unknown>).get('state') as Map<number, Map<string, TorchTensor>>;
    const params = torchParams(c.backbone);
    assert.equal(params.length, 183);
    assert.equal(c.optimizer.kind, 'sgd');
    const byIndex = new Map(c.optimizer.params.filter((p) => p.group === 'backbone').map((p) => [p.index, p]));
    params.forEach((p, id) => {
      const mine = p.slot!.toTorch(byIndex.get(p.trainableIndex)!.momentumBuffer!);
      assert.deepEqual(bits(mine), bits(opt0.get(id)!.get('momentum_buffer')!.data), `momentum of ${p.key} (id ${id})`);
    });
    const headState = c.optimizer.params.find((p) => p.group === 'head')!;
    assert.deepEqual(bits(headState.momentumBuffer!), bits([...(opt0.get(183)!.get('momentum_buffer')!.data as Float32Array), ...(opt1.get(183)!.get('momentum_buffer')!.data as Float32Array)]));
    // position, lr and schedule
    assert.deepEqual([c.position.step, c.position.epoch, c.position.batch], [2, 2, 0]);
    assert.deepEqual(c.schedule, { baseLr: 0.1, warmupSteps: 1, totalSteps: 8, power: 1 });
    const sched = new PolynomialLRWarmup(c.schedule);
    sched.restore(c.position.step);
    assert.equal(sched.lr, 0.08571428571428573); // the optimiser's lr in both files, exactly
    assert.deepEqual([c.config.batch_size, c.config.num_classes, c.config.weight_decay, c.config.lr, c.config.network], [8, 10, 5e-4, 0.1, 'mbf']);
  } finally {
    c.backbone.dispose();
  }
});

test('exporting the resumed state for world size 2 reproduces the fixture\'s files tensor for tensor', { skip: noRun }, async () => {
  const out = path.join(tmp, 'back');
  const r = await exportTorchrun(path.join(RUN!, 'run'), out, { worldSize: 2 });
  assert.deepEqual([r.epoch, r.globalStep, r.lr], [2, 2, 0.08571428571428573]);
  const diffs: string[] = [];
  const cmp = (a: unknown, b: unknown, where: string) => {
    if (a instanceof Map && b instanceof Map) {
      const ka = [...a.keys()].map(String).join();
      if (ka !== [...b.keys()].map(String).join()) diffs.push(`${where}: keys differ`);
      for (const [k, v] of a) cmp(v, b.get(k), `${where}.${String(k)}`);
    } else if (Array.isArray(a) && Array.isArray(b)) {
      if (a.length !== b.length) diffs.push(`${where}: length ${a.length} vs ${b.length}`);
      a.forEach((x, i) => cmp(x, b[i], `${where}[${i}]`));
    } else if (a && typeof a === 'object' && 'data' in a) {
      const x = a as TorchTensor;
      const y = b as TorchTensor;
      if (x.dtype !== y?.dtype || x.shape.join() !== y.shape.join()) diffs.push(`${where}: ${x.dtype}[${x.shape}] vs ${y?.dtype}[${y?.shape}]`);
      else if (bits(x.data).join() !== bits(y.data).join()) diffs.push(`${where}: values differ`);
    } else if (a !== b) diffs.push(`${where}: ${String(a)} vs ${String(b)}`);
  };
  let tensors = 0;
  for (const f of ['checkpoint_gpu_0.pt', 'checkpoint_gpu_1.pt', 'model.pt']) {
    const got = readTorchObject(path.join(out, f));
    cmp(got, readTorchObject(path.join(RUN!, 'run', f)), f);
    if (f === 'model.pt') tensors += (got as Map<string, unknown>).size;
  }
  assert.deepEqual(diffs, []);
  assert.equal(tensors, 333);
  const py = fs.readFileSync(path.join(out, 'config.py'), 'utf8');
  assert.match(py, /config\.batch_size = 4 /);
  assert.match(py, /config\.resume = True/);
  assert.match(py, new RegExp(`config\\.output = ${JSON.stringify(path.resolve(out)).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  assert.match(fs.readFileSync(path.join(out, 'README.md'), 'utf8'), /torchrun --nproc_per_node=2 train_v2\.py/);
});

/** data.npz: images [step, rank, 4, 3, 112, 112] (NCHW), labels [step, rank, 4]. */
function fixtureData(): { images: Float32Array; labels: BigInt64Array } {
  const z = unzipSync(fs.readFileSync(path.join(RUN!, 'data.npz')));
  return { images: readNpy(z['images.npy']!).data as Float32Array, labels: readNpy(z['labels.npy']!).data as BigInt64Array };
}

test('continuing the fixture reproduces the reference\'s next two losses and final weights', { skip: noRun }, () => {
  const expected = JSON.parse(fs.readFileSync(path.join(RUN!, 'expected.json'), 'utf8')) as { losses: number[] };
  const { images, labels } = fixtureData();
  const per = 4 * 3 * 112 * 112;
  const results: Record<string, number[]> = {};
  for (const fp16 of [true, false]) {
    const c = resumeFixture();
    const head = new PartialFC({ numClasses: 10, embeddingSize: 128, margin: { s: 64, m1: 1, m2: 0.5, m3: 0 } });
    head.setWeight(c.head.data);
    const opt = new TorchOptimizer(
      [
        { name: 'backbone', params: trainableVariables(c.backbone), clipNorm: 5 },
        { name: 'head', params: [head.weight] },
      ],
      { kind: 'sgd', weightDecay: 5e-4, momentum: 0.9 },
    );
    opt.setState(c.optimizer);
    const sched = new PolynomialLRWarmup(c.schedule);
    sched.restore(c.position.step);
    const losses: number[] = [];
    for (const step of [2, 3]) {
      const xs = [0, 1].map((r) => {
        const off = (step * 2 + r) * per;
        return tf.tidy(() => tf.tensor4d(images.subarray(off, off + per), [4, 3, 112, 112]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
      });
      const lab = Int32Array.from(labels.subarray(step * 8, step * 8 + 8), Number);
      losses.push(ddpStep(c.backbone, head, opt, sched, xs, lab, { fp16Allreduce: fp16 }));
      tf.dispose(xs);
    }
    results[fp16 ? 'fp16' : 'fp32'] = losses;
    if (fp16) {
      // rank 0's backbone (its own BatchNorm statistics) and both shards after step 4
      const want = readTorchStateDict(path.join(RUN!, 'expected', 'model_final.pt'));
      const got = toStateDict(c.backbone);
      let worst = 0;
      for (const [k, t] of want) {
        if (k.endsWith('num_batches_tracked')) continue;
        const g = got.get(k)!.data as Float32Array;
        (t.data as Float32Array).forEach((v, i) => (worst = Math.max(worst, Math.abs(v - g[i]!))));
      }
      const centres = head.weight.dataSync();
      let worstFc = 0;
      [0, 1].forEach((r) => {
        const w = readTorchStateDict(path.join(RUN!, 'expected', `pfc_final_rank${r}.pt`)).get('weight')!.data as Float32Array;
        w.forEach((v, i) => (worstFc = Math.max(worstFc, Math.abs(v - centres[r * 5 * 128 + i]!))));
      });
      process.stdout.write(`# final weights max |Δ|: backbone ${worst.toExponential(2)}, centres ${worstFc.toExponential(2)}\n`);
      assert.ok(worst < 1e-4, `backbone max |Δ| ${worst}`);
      assert.ok(worstFc < 1e-5, `centres max |Δ| ${worstFc}`);
    }
    opt.dispose();
    head.dispose();
    c.backbone.dispose();
  }
  const [l3, l4] = expected.losses.slice(2) as [number, number];
  process.stdout.write(`# losses: reference ${l3} ${l4}; ours fp16 all-reduce ${results.fp16}; fp32 all-reduce ${results.fp32}\n`);
  // Step 3 runs on the resumed state alone: equal to float32 summation order.
  for (const k of ['fp16', 'fp32']) assert.ok(Math.abs(results[k]![0]! - l3) <= 1e-5 * l3, `${k} step 3 ${results[k]![0]} vs ${l3}`);
  // Step 4 follows one update; with the fp16 all-reduce replayed it is again float32-close.
  assert.ok(Math.abs(results.fp16![1]! - l4) <= 1e-5 * l4, `fp16 step 4 ${results.fp16![1]} vs ${l4}`);
  // Without it, the backbone gradient differs by the fp16 rounding (relative 2^-11 per element).
  assert.ok(Math.abs(results.fp32![1]! - l4) <= 1e-3 * l4, `fp32 step 4 ${results.fp32![1]} vs ${l4}`);
});

test('half-precision rounding: ties to even, subnormals, overflow', () => {
  assert.equal(toHalf(1 + 2 ** -11), 1); // tie -> even
  assert.equal(toHalf(1 + 3 * 2 ** -11), 1 + 2 ** -9);
  assert.equal(toHalf(2 ** -25), 0); // half of the smallest subnormal: tie to 0
  assert.equal(toHalf(3 * 2 ** -25), 2 ** -23);
  assert.equal(toHalf(65519), 65504);
  assert.equal(toHalf(-70000), -Infinity);
});
