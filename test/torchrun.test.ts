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
import { trainForward, trainableVariables, type BatchNormUpdate } from '../src/train/forward.ts';
import { PartialFC } from '../src/losses/partial-fc.ts';
import { toStateDict } from '../src/convert/torch-mapping.ts';
import { readTorchrun } from '../src/convert/torchrun/read.ts';
import { shardLayout, torchKeyOrder, torchParams } from '../src/convert/torchrun/layout.ts';
import { torchrunToContents, type TorchrunContents } from '../src/convert/torchrun/state.ts';
import { configFromPy, parseConfigPy, toConfigPy } from '../src/convert/torchrun/config-py.ts';
import { exportTorchrun } from '../src/convert/torchrun/export.ts';
import { sharedFixture, skipUnlessFixture } from './helpers/fixtures.ts';
import { allReduce, applyStep, ddpGradients, ddpLoss, toHalf } from './helpers/ddp-step.ts';

const RUN = sharedFixture('torch_run');
const noRun = skipUnlessFixture('torch_run');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-torchrun-'));

before(async () => {
  // wasm: the continuation runs MobileFaceNet on 112x112 images (the cpu backend takes minutes)
  await initBackend('wasm', { quiet: true });
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
  const batch = (step: number) => ({
    xs: [0, 1].map((r) => {
      const off = (step * 2 + r) * per;
      return tf.tidy(() => tf.tensor4d(images.subarray(off, off + per), [4, 3, 112, 112]).transpose([0, 2, 3, 1]) as tf.Tensor4D);
    }),
    labels: Int32Array.from(labels.subarray(step * 8, step * 8 + 8), Number),
  });
  // Two copies of the resumed state: one all-reduces in fp16 as train_v2.py's hook does, one in float32.
  const setup = () => {
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
    return { c, head, opt, sched };
  };
  const a = setup();
  const b = setup();
  const b3 = batch(2);
  const g3 = ddpGradients(a.c.backbone, a.head, b3.xs, b3.labels);
  // b takes the same gradients; its rank-0 BatchNorm statistics from its own (identical) forward
  const bUpdates: BatchNormUpdate[] = [];
  tf.tidy(() => void trainForward(b.c.backbone, b3.xs[0]!, bUpdates, { compiled: false }));
  applyStep(a.c.backbone, a.head, a.opt, a.sched, allReduce(g3.shares, true), g3.head, g3.updates);
  applyStep(b.c.backbone, b.head, b.opt, b.sched, allReduce(g3.shares, false), g3.head, bUpdates);
  tf.dispose(b3.xs);
  const b4 = batch(3);
  const g4 = ddpGradients(a.c.backbone, a.head, b4.xs, b4.labels);
  applyStep(a.c.backbone, a.head, a.opt, a.sched, allReduce(g4.shares, true), g4.head, g4.updates);
  const fp32Loss4 = ddpLoss(b.c.backbone, b.head, b4.xs, b4.labels);
  tf.dispose(b4.xs);

  // After step 4: how far each engine moved the weights from the checkpoint, as ||Δours − Δref|| / ||Δref||
  // over all trained weights, and the running statistics (rank 0's own) relative to their size.
  const before0 = readTorchStateDict(path.join(RUN!, 'run', 'model.pt'));
  const want = readTorchStateDict(path.join(RUN!, 'expected', 'model_final.pt'));
  const got = toStateDict(a.c.backbone);
  let num = 0;
  let den = 0;
  let statsRel = 0;
  for (const [k, t] of want) {
    if (k.endsWith('num_batches_tracked')) continue;
    const ref = t.data as Float32Array;
    const ours = got.get(k)!.data as Float32Array;
    const init = before0.get(k)!.data as Float32Array;
    if (k.includes('.running_')) {
      // a mean in units of its channel's standard deviation, a variance relative to itself
      const variance = want.get(k.replace('running_mean', 'running_var'))!.data as Float32Array;
      ref.forEach((v, i) => {
        const unit = k.endsWith('running_mean') ? Math.sqrt(variance[i]!) : variance[i]!;
        statsRel = Math.max(statsRel, Math.abs(v - ours[i]!) / unit);
      });
      continue;
    }
    ref.forEach((v, i) => {
      num += (ours[i]! - v) ** 2;
      den += (v - init[i]!) ** 2;
    });
  }
  const backboneResidual = Math.sqrt(num / den);
  const centres = a.head.weight.dataSync();
  const initCentres = a.c.head.data; // the resumed centres (the head variable holds its own copy)
  let cNum = 0;
  let cDen = 0;
  [0, 1].forEach((r) => {
    const w = readTorchStateDict(path.join(RUN!, 'expected', `pfc_final_rank${r}.pt`)).get('weight')!.data as Float32Array;
    w.forEach((v, i) => {
      const j = r * 5 * 128 + i;
      cNum += (centres[j]! - v) ** 2;
      cDen += (v - initCentres[j]!) ** 2;
    });
  });
  const centresResidual = Math.sqrt(cNum / cDen);
  for (const s of [a, b]) {
    s.opt.dispose();
    s.head.dispose();
    s.c.backbone.dispose();
  }
  const [l3, l4] = expected.losses.slice(2) as [number, number];
  process.stdout.write(
    `# losses: reference ${l3} ${l4}; ours ${g3.loss} ${g4.loss} (fp16 all-reduce), step 4 with a float32 all-reduce ${fp32Loss4}\n` +
      `# after step 4, ||Δours − Δref|| / ||Δref||: backbone ${backboneResidual.toExponential(2)}, centres ${centresResidual.toExponential(2)}; ` +
      `running statistics max |Δmean| / std, |Δvar| / var ${statsRel.toExponential(2)}\n`,
  );
  // Step 3 is computed from the resumed state alone (each rank's BatchNorm on its own images, as DDP does):
  // equal up to float32 summation order.
  assert.ok(Math.abs(g3.loss - l3) <= 1e-5 * l3, `step 3: ${g3.loss} vs ${l3}`);
  // Step 4 follows one update, whose backbone gradient carries the fp16 all-reduce's rounding (2^-11 relative
  // per element) and the backward's float32 reduction order (the conv-filter gradients are sums of ~10^4
  // terms that largely cancel: two of our own engines differ by 2e-3 relative on this very step). The fp16
  // rounding alone moves step 4's loss by 2.4e-5 relative here (fp16 vs float32 replay); the bound is 4x that.
  assert.ok(Math.abs(g4.loss - l4) <= 1e-4 * l4, `step 4: ${g4.loss} vs ${l4}`);
  assert.ok(Math.abs(fp32Loss4 - l4) <= 1e-4 * l4, `step 4 with a float32 all-reduce: ${fp32Loss4} vs ${l4}`);
  // The same noise, in the weights two updates later (measured: 1.9% of the backbone's movement, 5e-5 of the centres').
  assert.ok(backboneResidual < 0.05, `backbone ||Δours − Δref|| / ||Δref|| = ${backboneResidual}`);
  assert.ok(centresResidual < 0.05, `centres ||Δours − Δref|| / ||Δref|| = ${centresResidual}`);
  assert.ok(statsRel < 1e-2, `running statistics ${statsRel}`);
});

test('config.py: the fixture\'s is read (per-GPU batch made global); ours is written and reads back', { skip: noRun }, () => {
  assert.deepEqual(configFromPy(parseConfigPy(path.join(RUN!, 'run', 'config.py')), 2), {
    network: 'mbf',
    embedding_size: 128,
    sample_rate: 1,
    fp16: false,
    optimizer: 'sgd',
    lr: 0.1,
    momentum: 0.9,
    weight_decay: 5e-4,
    num_epoch: 8,
    warmup_epoch: 1,
    rec: 'synthetic',
    num_classes: 10,
    num_image: 8,
    verbose: 2000,
    margin_list: [1, 0.5, 0],
    batch_size: 8,
    val_targets: [],
  });
  const cfg = loadConfig('ms1mv3_r50', { gradient_acc: 2, warmup_epoch: 0.5, num_workers: 6, widths: [32, 64, 128, 256], max_steps: 1000 });
  const py = toConfigPy(cfg, { worldSize: 8, numClasses: 93431, numImage: 5179510, output: '/scratch/r50' });
  assert.deepEqual(py.warnings.map((w) => w.split(' =')[0]), ['network', 'widths', 'max_steps']);
  const file = path.join(tmp, 'config.py');
  fs.writeFileSync(file, py.text);
  const back = configFromPy(parseConfigPy(file), 8);
  for (const k of Object.keys(back) as (keyof typeof back)[]) assert.deepEqual(back[k], cfg[k], k);
  assert.equal(Object.keys(back).length, 22);
  assert.equal(parseConfigPy(file).get('output'), '/scratch/r50');
  assert.equal(parseConfigPy(file).get('batch_size'), 16);
  // every key of ours appears in the file, mapped or explained
  for (const k of Object.keys(cfg)) assert.match(py.text, new RegExp(`(^config\\.${k} = |our ${k} = )`, 'm'), k);
});

test('half-precision rounding: ties to even, subnormals, overflow', () => {
  assert.equal(toHalf(1 + 2 ** -11), 1); // tie -> even
  assert.equal(toHalf(1 + 3 * 2 ** -11), 1 + 2 ** -9);
  assert.equal(toHalf(2 ** -25), 0); // half of the smallest subnormal: tie to 0
  assert.equal(toHalf(3 * 2 ** -25), 2 ** -23);
  assert.equal(toHalf(65519), 65504);
  assert.equal(toHalf(-70000), -Infinity);
});
