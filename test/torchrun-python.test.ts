// A run of ours exported for torchrun on 1, 2 and 3 ranks, checked by PyTorch itself: every file loads with
// torch.load, the optimiser state loads into torch.optim.SGD / AdamW built over tensors of the checkpoint's
// shapes (and steps), PolynomialLRWarmup's state continues our schedule, and the shards concatenate back to
// our centres and their optimiser buffers.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { initBackend } from '../src/backend/select.ts';
import { writeNpy } from '../src/formats/npy.ts';
import { buildBackbone, resolveSpec } from '../src/models/factory.ts';
import { loadConfig } from '../src/train/config.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';
import { PolynomialLRWarmup } from '../src/train/lr-schedule.ts';
import type { ParamState } from '../src/train/optimizers.ts';
import { exportTorchrun } from '../src/convert/torchrun/export.ts';
import { readTorchrun } from '../src/convert/torchrun/read.ts';
import { torchrunToContents } from '../src/convert/torchrun/state.ts';
import { torchParams } from '../src/convert/torchrun/layout.ts';
import { readTorchObject, type TorchTensor } from '../src/formats/torch.ts';
import { prng, randomizeWeights } from './helpers/random-weights.ts';

const PY = '/usr/bin/python3';
const hasTorch = fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const skipNoTorch = hasTorch ? false : `${PY} with torch (Debian python3-torch) not installed`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-torchrun-py-'));

before(async () => {
  await initBackend('cpu', { quiet: true });
});

// torch itself takes one more step on every rank (the same backbone gradient everywhere, as after DDP's
// all-reduce; each rank its own centres' gradient) and saves the result as train_v2.py would.
const STEP = String.raw`
import sys, torch
out, kind, n, wd = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')
for r in range(n):
    path = '%s/checkpoint_gpu_%d.pt' % (out, r)
    ck = torch.load(path)
    sd = ck['state_dict_backbone']
    keys = [k for k in sd if not k.endswith(BUFFERS)]
    bb = [sd[k].clone().requires_grad_(True) for k in keys]
    fc = ck['state_dict_softmax_fc']['weight'].clone().requires_grad_(True)
    groups = [{'params': bb}, {'params': [fc]}]
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=wd) if kind == 'sgd' else torch.optim.AdamW(groups, lr=0.1, weight_decay=wd)
    opt.load_state_dict(ck['state_optimizer'])
    g = torch.Generator().manual_seed(7)
    for p in bb:
        p.grad = torch.randn(p.shape, generator=g)
    fc.grad = torch.randn(fc.shape, generator=torch.Generator().manual_seed(100 + r))
    if 'features.weight' in keys:
        bb[keys.index('features.weight')].grad = None  # IResNet's frozen last-BN gamma gets no gradient
    opt.step()
    with torch.no_grad():
        for k, p in zip(keys, bb):
            sd[k] = p.detach().clone()
    ck['state_dict_softmax_fc']['weight'] = fc.detach().clone()
    ck['state_optimizer'] = opt.state_dict()
    ck['global_step'] += 1
    torch.save(ck, path)
print('ok')
`;

const CHECK = String.raw`
import json, sys, numpy as np, torch
out, kind, n, wd = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
head = np.load(sys.argv[5]); bufs = [np.load(f) for f in sys.argv[6:]]
BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')

class PolyWarmup(torch.optim.lr_scheduler._LRScheduler):
    # arcface_torch's PolynomialLRWarmup, rewritten for this check
    def __init__(self, opt, warmup_iters, total_iters, power=1.0):
        self.warmup_iters, self.total_iters, self.power = warmup_iters, total_iters, power
        super().__init__(opt)
    def get_lr(self):
        l, w, t = self.last_epoch, self.warmup_iters, self.total_iters
        if l == 0 or l > t:
            return [g['lr'] for g in self.optimizer.param_groups]
        if l <= w:
            return [b * l / w for b in self.base_lrs]
        f = ((1.0 - (l - w) / (t - w)) / (1.0 - (l - 1 - w) / (t - w))) ** self.power
        return [g['lr'] * f for g in self.optimizer.param_groups]

res = {'ranks': []}
shards, shard_bufs = [], [[] for _ in bufs]
model = torch.load(out + '/model.pt')
for r in range(n):
    ck = torch.load('%s/checkpoint_gpu_%d.pt' % (out, r))
    sd = ck['state_dict_backbone']
    assert list(sd.keys()) == list(model.keys())
    keys = [k for k in sd if not k.endswith(BUFFERS)]
    bb = [torch.zeros(sd[k].shape, requires_grad=True) for k in keys]
    fc = torch.zeros(ck['state_dict_softmax_fc']['weight'].shape, requires_grad=True)
    groups = [{'params': bb}, {'params': [fc]}]
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=wd) if kind == 'sgd' else torch.optim.AdamW(groups, lr=0.1, weight_decay=wd)
    sched = PolyWarmup(opt, 0, 1)
    opt.load_state_dict(ck['state_optimizer'])
    sched.load_state_dict(ck['state_lr_scheduler'])
    names = ['momentum_buffer'] if kind == 'sgd' else ['exp_avg', 'exp_avg_sq']
    with_state = 0
    for p in bb + [fc]:
        st = opt.state.get(p, {})
        if not st: continue
        with_state += 1
        for b in names:
            assert st[b].shape == p.shape and st[b].dtype == torch.float32, (b, st[b].shape, p.shape)
        if kind == 'adamw':
            assert torch.is_tensor(st['step']) and st['step'].dim() == 0
    st = opt.state[fc]
    for i, b in enumerate(names):
        shard_bufs[i].append(st[b].numpy().copy())
    shards.append(ck['state_dict_softmax_fc']['weight'].numpy().copy())
    lr0 = opt.param_groups[0]['lr']
    for p in bb + [fc]:
        p.grad = torch.zeros_like(p)
    opt.step()
    sched.step()
    res['ranks'].append({'epoch': ck['epoch'], 'global_step': ck['global_step'], 'params': len(bb), 'with_state': with_state,
                         'lr': lr0, 'next_lr': opt.param_groups[0]['lr'], 'rows': fc.shape[0],
                         'nbt': int(sd[[k for k in sd if k.endswith('num_batches_tracked')][0]])})
res['head_equal'] = bool(np.array_equal(np.concatenate(shards), head))
res['buffers_equal'] = [bool(np.array_equal(np.concatenate(s), b)) for s, b in zip(shard_bufs, bufs)]
print(json.dumps(res))
`;

interface Case {
  name: string;
  spec: Parameters<typeof resolveSpec>[0];
  optimizer: 'sgd' | 'adamw';
  extra?: Record<string, unknown>;
}

const CASES: Case[] = [
  { name: 'iresnet-sgd', spec: { network: 'iresnet', layers: [1, 2, 1, 1], widths: [8, 16, 16, 32], embeddingSize: 16, inputSize: 32 }, optimizer: 'sgd' },
  { name: 'mbf-adamw', spec: { network: 'mbf', embeddingSize: 32, inputSize: 32 }, optimizer: 'adamw' },
];

for (const cs of CASES) {
  test(`export of a run of ours (${cs.name}) for 1, 2 and 3 ranks loads into torch`, { skip: skipNoTorch }, async () => {
    const spec = resolveSpec(cs.spec);
    const backbone = buildBackbone(spec, { seed: 3 });
    randomizeWeights(backbone, { seed: 5 });
    const numClasses = 10;
    const rand = prng(11);
    const arr = (n: number, positive = false) => Float32Array.from({ length: n }, () => (positive ? rand() + 0.01 : rand() * 2 - 1));
    const head = arr(numClasses * spec.embeddingSize);
    const step = 6; // 24 images in global batches of 12: two steps an epoch, so step 6 ends epoch 3
    const bufNames = cs.optimizer === 'sgd' ? (['momentumBuffer'] as const) : (['expAvg', 'expAvgSq'] as const);
    const params: ParamState[] = backbone.trainableWeights.map((w, index) => {
      const n = w.shape.reduce((a, b) => a! * b!, 1)!;
      const ps: ParamState = { group: 'backbone', index, shape: w.shape as number[], step };
      for (const b of bufNames) ps[b] = arr(n, b === 'expAvgSq');
      return ps;
    });
    const headState: ParamState = { group: 'head', index: 0, shape: [numClasses, spec.embeddingSize], step };
    for (const b of bufNames) headState[b] = arr(numClasses * spec.embeddingSize, b === 'expAvgSq');
    const config = loadConfig('base', {
      network: spec.network,
      layers: spec.network === 'iresnet' ? spec.layers! : null,
      widths: spec.network === 'iresnet' ? spec.widths! : null,
      embedding_size: spec.embeddingSize,
      input_size: spec.inputSize,
      optimizer: cs.optimizer,
      lr: cs.optimizer === 'sgd' ? 0.1 : 0.001,
      weight_decay: cs.optimizer === 'sgd' ? 5e-4 : 0.1,
      batch_size: 12,
      num_image: 24,
      num_epoch: 5,
      warmup_epoch: 1,
      num_classes: numClasses,
      rec: path.join(tmp, 'nowhere'),
    });
    const runDir = path.join(tmp, cs.name);
    await saveCheckpoint(path.join(runDir, 'checkpoint'), {
      backbone,
      spec,
      head: { shape: [numClasses, spec.embeddingSize], data: head },
      optimizer: { kind: cs.optimizer, step, params: [...params, headState] },
      position: { step, epoch: 3, batch: 0, headRng: 1, best: {}, bestMean: -1 },
      config,
      numImage: 24,
    });
    backbone.dispose();
    const headFile = path.join(tmp, `${cs.name}-head.npy`);
    writeNpy(headFile, { shape: [numClasses, spec.embeddingSize], data: head });
    const bufFiles = bufNames.map((b) => {
      const f = path.join(tmp, `${cs.name}-${b}.npy`);
      writeNpy(f, { shape: [numClasses, spec.embeddingSize], data: headState[b]! });
      return f;
    });
    const sched = new PolynomialLRWarmup({ baseLr: config.lr, warmupSteps: 2, totalSteps: 10 });
    sched.restore(step);
    const lr = sched.lr;
    sched.step();
    const nextLr = sched.lr;
    for (const n of [1, 2, 3]) {
      const out = path.join(tmp, `${cs.name}-w${n}`);
      const warnings: string[] = [];
      const r = await exportTorchrun(runDir, out, { worldSize: n, warn: (m) => warnings.push(m) });
      if (cs.spec.network === 'iresnet') assert.ok(warnings.some((w) => /widths = \[8,16,16,32\]/.test(w)), warnings.join('\n'));
      assert.deepEqual(r.shards.map((s) => s.numLocal), n === 3 ? [4, 3, 3] : n === 2 ? [5, 5] : [10]);
      const py = spawnSync(PY, ['-c', CHECK, out, cs.optimizer, String(n), String(config.weight_decay), headFile, ...bufFiles], { encoding: 'utf8' });
      assert.equal(py.status, 0, py.stderr);
      const res = JSON.parse(py.stdout.trim().split('\n').pop()!) as {
        ranks: { epoch: number; global_step: number; params: number; with_state: number; lr: number; next_lr: number; rows: number; nbt: number }[];
        head_equal: boolean;
        buffers_equal: boolean[];
      };
      assert.equal(res.head_equal, true, `world size ${n}: shards do not concatenate to our centres`);
      assert.deepEqual(res.buffers_equal, bufNames.map(() => true));
      const torchParams = cs.spec.network === 'iresnet' ? params.length + 1 : params.length; // + IResNet's frozen last-BN gamma
      for (const [rank, rr] of res.ranks.entries()) {
        assert.deepEqual([rr.epoch, rr.global_step, rr.params, rr.nbt], [3, step, torchParams, step], `rank ${rank}`);
        assert.equal(rr.with_state, params.length + 1, `rank ${rank}: every trained parameter and the centres carry state`);
        assert.equal(rr.lr, lr);
        assert.ok(Math.abs(rr.next_lr - nextLr) <= 1e-15, `rank ${rank}: torch's next lr ${rr.next_lr}, ours ${nextLr}`);
      }
    }

    // Back: what torch's own optimiser wrote after one more step on 3 ranks is gathered exactly.
    const out3 = path.join(tmp, `${cs.name}-w3`);
    const stepped = spawnSync(PY, ['-c', STEP, out3, cs.optimizer, '3', String(config.weight_decay)], { encoding: 'utf8' });
    assert.equal(stepped.status, 0, stepped.stderr);
    const warnings: string[] = [];
    const back = torchrunToContents(readTorchrun(out3), config, (m) => warnings.push(m));
    try {
      assert.deepEqual(warnings.filter((w) => !/scheduler is at step 6, the checkpoint at step 7|lr .* is not the schedule/.test(w)), []);
      const ranks = [0, 1, 2].map((r) => readTorchObject(path.join(out3, `checkpoint_gpu_${r}.pt`)) as Map<string, Map<string, unknown>>);
      const sd0 = ranks[0]!.get('state_dict_backbone') as Map<string, TorchTensor>;
      const opt0 = (ranks[0]!.get('state_optimizer')!.get('state') as Map<number, Map<string, TorchTensor>>);
      const tp = torchParams(back.backbone);
      const byIndex = new Map(back.optimizer.params.filter((p) => p.group === 'backbone').map((p) => [p.index, p]));
      const names = cs.optimizer === 'sgd' ? ([['momentum_buffer', 'momentumBuffer']] as const) : ([['exp_avg', 'expAvg'], ['exp_avg_sq', 'expAvgSq']] as const);
      let checked = 0;
      tp.forEach((p, id) => {
        if (!p.slot) return assert.equal(opt0.get(id), undefined, `${p.key} is frozen: no state`);
        assert.deepEqual(Array.from(p.slot.toTorch(p.slot.variable.read().dataSync() as Float32Array)), Array.from(sd0.get(p.key)!.data as Float32Array), p.key);
        const ps = byIndex.get(p.trainableIndex)!;
        for (const [t, o] of names) assert.deepEqual(Array.from(p.slot.toTorch(ps[o]!)), Array.from(opt0.get(id)!.get(t)!.data as Float32Array), `${p.key} ${t}`);
        if (cs.optimizer === 'adamw') assert.equal(ps.step, 7);
        checked++;
      });
      assert.equal(checked, params.length);
      const headId = tp.length;
      const cat = (pick: (m: Map<string, Map<string, unknown>>) => TorchTensor) => ranks.flatMap((m) => Array.from(pick(m).data as Float32Array));
      assert.deepEqual(Array.from(back.head.data), cat((m) => (m.get('state_dict_softmax_fc') as Map<string, TorchTensor>).get('weight')!));
      const headState = back.optimizer.params.find((p) => p.group === 'head')!;
      for (const [t, o] of names) {
        assert.deepEqual(Array.from(headState[o]!), cat((m) => (m.get('state_optimizer')!.get('state') as Map<number, Map<string, TorchTensor>>).get(headId)!.get(t)!), t);
      }
      assert.deepEqual([back.position.step, back.position.epoch, back.optimizer.kind], [7, 3, cs.optimizer]);
    } finally {
      back.backbone.dispose();
    }
  });
}
