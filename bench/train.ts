// Training throughput (samples/s), GFLOP/s and peak RSS per backend and model, one JSON line per row:
//   node --import tsx bench/train.ts [--models tiny,tiny64,r18,r50,r100,mbf] [--backends ort,wasm,cpu,webgpu] [--seconds 20]
//        [--budget 300] [--profile] [--batch N] [--steps N] [--warmup 4]
// Default batches: 16 (r18, r50), 8 (r100, the memory row), 32 (mbf), the config's (tiny): the batches of the PyTorch CPU figures they are compared with. --steps N
// runs exactly N steps and adds `steady`: numTensors and RSS at every tenth of them.
// The step is the training loop's (src/train/step.ts): trainForward + PartialFC (ArcFace over 1,000 classes; `tiny` uses
// its config's CosFace head) + TorchOptimizer SGD (momentum 0.9, wd 5e-4), on random images (ort rows add
// graphMsPerStep: the time inside the one-graph step, the rest being the optimizer and tfjs). Each row
// runs in its own process (peak RSS is per process; an out-of-memory row cannot take the others down);
// a row that fails or runs past --budget seconds prints a JSON line saying so. --profile adds a
// per-kernel-family breakdown of one step (tf.profile; kernels that call tf ops inside are also
// counted in their parts).
//   --vs-torch [--rounds 3]: PyTorch side by side (bench/torch_train.py on /usr/bin/python3 or
// $ARCFACE_PYTHON: the same step on reference-shaped backbones), this project's ort row and PyTorch's
// alternating, each in its own process, for --rounds rounds (the order flips every round); then one
// `train-vs-torch` line per model: median samples/s and peak-RSS ratios with their min and max.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { buildBackbone, resolveSpec, type BackboneSpec } from '../src/models/factory.ts';
import { initBackend } from '../src/backend/select.ts';
import { loadConfig } from '../src/train/config.ts';
import { trainableVariables } from '../src/train/forward.ts';
import { trainStep, type StepParts } from '../src/train/step.ts';
import { PartialFC } from '../src/losses/partial-fc.ts';
import { TorchOptimizer } from '../src/train/optimizers.ts';
import { compiledTimes } from '../src/ort/train.ts';
import { describeAdapter, webgpuAdapter } from '../src/backend/webgpu.ts';
import { arg, emit, peakRssMiB, tf } from './common.ts';

interface Row {
  model: string;
  spec: Partial<BackboneSpec> & { network: string };
  batch: number;
  margin: { s: number; m1: number; m2: number; m3: number };
}

function rowFor(model: string): Row {
  const arcface = { s: 64, m1: 1, m2: 0.5, m3: 0 };
  if (model === 'tiny' || model === 'tiny64') {
    // tiny64: the demo's target shape (the tiny config at 64x64 input), whatever the config file says.
    const c = loadConfig('tiny', model === 'tiny64' ? { input_size: 64 } : {});
    const [m1, m2, m3] = c.margin_list;
    return {
      model,
      spec: { network: c.network, layers: c.layers ?? undefined, widths: c.widths ?? undefined, inputSize: c.input_size, embeddingSize: c.embedding_size },
      batch: c.batch_size,
      margin: { s: c.scale, m1, m2, m3 },
    };
  }
  const batch = Number(arg('batch', model === 'mbf' ? '32' : model === 'r100' ? '8' : '16'));
  return { model, spec: { network: model }, batch, margin: arcface };
}

/** Forward multiply-accumulates per image: every conv/dense kernel times its output positions. */
function forwardMacs(model: tf.LayersModel): number {
  let macs = 0;
  for (const layer of model.layers) {
    const kernel = layer.weights.find((w) => /kernel$/.test(w.originalName));
    if (!kernel) continue;
    const out = layer.outputShape as number[];
    const positions = out.length === 4 ? out[1]! * out[2]! : 1;
    macs += positions * kernel.shape.reduce((a: number, b) => a * (b ?? 1), 1);
  }
  return macs;
}

const FAMILIES: [string, RegExp][] = [
  ['conv fwd', /^(Conv2D|FusedConv2D|DepthwiseConv2dNative|FusedDepthwiseConv2D)$/],
  ['conv dX', /BackpropInput$/],
  ['conv dW', /BackpropFilter$/],
  ['prelu', /^Prelu$/],
  ['matmul', /^(BatchMatMul|_FusedMatMul)$/],
  ['reductions', /^(Sum|Mean|Max|Min|Prod|ArgMax|All|Any)$/],
  ['data movement', /^(Transpose|Reshape|Slice|StridedSlice|Pad|PadV2|Concat|Tile|Cast|Identity|GatherV2|UnsortedSegmentSum|Reverse|Fill|OnesLike|ZerosLike|MirrorPad)$/],
];

function family(kernel: string): string {
  return FAMILIES.find(([, re]) => re.test(kernel))?.[0] ?? 'element-wise';
}

async function child(backend: string, model: string): Promise<void> {
  await initBackend(backend, { quiet: true });
  const row = rowFor(model);
  const spec = resolveSpec(row.spec);
  const backbone = buildBackbone(spec, { seed: 1 });
  const numClasses = 1000;
  const head = new PartialFC({ numClasses, embeddingSize: spec.embeddingSize, margin: row.margin, sampleRate: 1, seed: 1 });
  const vars = trainableVariables(backbone);
  // The reference's step: SGD, momentum 0.9, wd 5e-4, the backbone's gradient norm clipped at 5.
  const opt = new TorchOptimizer([{ name: 'backbone', params: vars, clipNorm: 5 }, { name: 'head', params: [head.weight] }], { kind: 'sgd', weightDecay: 5e-4, momentum: 0.9 });
  const images = tf.randomUniform([row.batch, spec.inputSize, spec.inputSize, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
  const labels = Int32Array.from({ length: row.batch }, (_, i) => (i * 37) % numClasses);
  const parts: StepParts = { backbone, head, optimizer: opt, backboneVars: vars, bnUpdates: [] };
  // The loss is read as the training loop reads it (asynchronously: webgpu has no synchronous read).
  const step = (): Promise<number> => trainStep(parts, images, labels, 0.01);
  const flopPerImage = 3 * 2 * (forwardMacs(backbone) + spec.embeddingSize * numClasses); // fwd + dX + dW
  const base: Record<string, unknown> = { bench: 'train', engine: `tfjs-${backend}`, model, batch: row.batch, inputSize: spec.inputSize, threads: os.availableParallelism() };
  const gpu = backend === 'webgpu' ? webgpuAdapter() : null;
  if (gpu) base.adapter = describeAdapter(gpu);
  const t0 = performance.now();
  // Warm-up (--warmup, default 4 steps): builds the ORT sessions, and lets their memory arenas and the
  // process's pages settle (the first 3-5 compiled steps run up to 2x slower).
  const warmup = Math.max(1, Number(arg('warmup', '4')));
  for (let i = 0; i < warmup; i++) await step();
  const warmupS = (performance.now() - t0) / 1000;
  const seconds = Number(arg('seconds', '20'));
  const tensorsBefore = tf.memory().numTensors;
  const times: number[] = [];
  let loss = NaN;
  const start = performance.now();
  // CPU time (all threads) per step: steadier than wall time on a loaded machine.
  const cpu0 = process.cpuUsage();
  // Time inside the one-graph step (onnxruntime), the rest being the optimizer and tfjs around it.
  const graph0 = compiledTimes.stepMs;
  // --steps N: exactly N steps, sampling numTensors and RSS at each tenth (the steady-state check).
  const fixedSteps = Number(arg('steps', '0'));
  const rssMiB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
  const samples: Record<string, number>[] = [];
  const mib = (x: number) => Math.round(x / 2 ** 20);
  const wasmHeap = () => mib((tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm?.HEAPU8.length ?? 0);
  while (fixedSteps ? times.length < fixedSteps : times.length < 3 || (performance.now() - start < seconds * 1000 && times.length < 200)) {
    const t = performance.now();
    loss = await step();
    times.push(performance.now() - t);
    if (fixedSteps && (times.length === 1 || times.length % Math.max(1, Math.floor(fixedSteps / 10)) === 0)) {
      const m = process.memoryUsage();
      samples.push({ step: times.length, numTensors: tf.memory().numTensors, rssMiB: rssMiB(), wasmHeapMiB: wasmHeap(), jsHeapMiB: mib(m.heapUsed), externalMiB: mib(m.external) });
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const graphMs = (compiledTimes.stepMs - graph0) / times.length;
  const cpuMsPerStep = (cpu.user + cpu.system) / 1000 / times.length;
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)]!;
  const out: Record<string, unknown> = {
    ...base,
    imgPerSec: +((row.batch * 1000) / ms).toFixed(2),
    msPerStep: +ms.toFixed(1),
    cpuMsPerStep: +cpuMsPerStep.toFixed(0),
    ...(graphMs > 0 ? { graphMsPerStep: +graphMs.toFixed(0) } : {}),
    gflops: +((flopPerImage * row.batch) / 1e9 / (ms / 1000)).toFixed(1),
    steps: times.length,
    warmupS: +warmupS.toFixed(1),
    loss: +loss.toFixed(4),
    numTensors: [tensorsBefore, tf.memory().numTensors],
    peakRssMiB: peakRssMiB(),
    load1: +os.loadavg()[0]!.toFixed(2),
  };
  if (fixedSteps) out.steady = samples;
  if (process.argv.includes('--profile')) {
    const before = { ...compiledTimes };
    const t = performance.now();
    const info = await tf.profile(async () => {
      await step();
    });
    out.profileStepMs = +(performance.now() - t).toFixed(0);
    const fwd = compiledTimes.forwardMs - before.forwardMs;
    const bwd = compiledTimes.backwardMs - before.backwardMs;
    if (fwd > 0) out.compiledGraphMs = { forward: +fwd.toFixed(0), backward: +bwd.toFixed(0) };
    const byFamily: Record<string, number> = {};
    const byKernel: Record<string, number> = {};
    for (const k of info.kernels) {
      const t = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      byFamily[family(k.name)] = (byFamily[family(k.name)] ?? 0) + t;
      byKernel[k.name] = (byKernel[k.name] ?? 0) + t;
    }
    const round = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, +v.toFixed(1)]));
    out.profileMs = round(byFamily);
    out.topKernelsMs = Object.fromEntries(Object.entries(round(byKernel)).slice(0, 12));
  }
  emit(out);
}

function parent(): void {
  const models = (arg('models', 'tiny,tiny64,r18,r50,r100,mbf') ?? '').split(',');
  const backends = (arg('backends', 'ort,wasm,cpu') ?? '').split(',');
  const budget = Number(arg('budget', '300'));
  const self = fileURLToPath(import.meta.url);
  const pass = [
    '--seconds',
    arg('seconds', '20')!,
    ...(process.argv.includes('--profile') ? ['--profile'] : []),
    ...(arg('batch', '') ? ['--batch', arg('batch', '')!] : []),
    ...(arg('steps', '') ? ['--steps', arg('steps', '')!] : []),
    ...(arg('warmup', '') ? ['--warmup', arg('warmup', '')!] : []),
  ];
  for (const backend of backends) {
    for (const model of models) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', backend, model, ...pass], {
        encoding: 'utf8',
        timeout: budget * 1000,
        maxBuffer: 1 << 24,
      });
      const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      if (r.status === 0 && line) {
        process.stdout.write(`${line}\n`);
        continue;
      }
      const why = r.error?.message.includes('ETIMEDOUT') || r.signal === 'SIGTERM'
        ? `over the time budget of ${budget} s`
        : /RuntimeError: (Aborted\(\)|memory access out of bounds)/.test(r.stderr) ? 'out of memory: the wasm heap (4 GB) is full'
        : /out of memory|Cannot allocate|OOM|RangeError/i.test(r.stderr) ? `out of memory: ${lastLine(r.stderr)}` : `failed: ${lastLine(r.stderr)}`;
      emit({ bench: 'train', engine: `tfjs-${backend}`, model, skipped: why, load1: +os.loadavg()[0]!.toFixed(2) });
    }
  }
}

/** One bench row in a child process: this project's (`--child`) or PyTorch's; null when it failed. */
function runRow(cmd: string, args: string[], budget: number): Record<string, unknown> | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: budget * 1000, maxBuffer: 1 << 24 });
  const line = r.stdout?.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (r.status === 0 && line) return JSON.parse(line) as Record<string, unknown>;
  emit({ bench: 'train', command: [cmd, ...args].join(' '), failed: r.error?.message ?? lastLine(r.stderr ?? '') });
  return null;
}

function vsTorch(): void {
  const models = (arg('models', 'r18,mbf,r50') ?? '').split(',');
  const rounds = Number(arg('rounds', '3'));
  const budget = Number(arg('budget', '300'));
  const python = process.env.ARCFACE_PYTHON ?? '/usr/bin/python3';
  const self = fileURLToPath(import.meta.url);
  const torchScript = path.join(path.dirname(self), 'torch_train.py');
  const seconds = arg('seconds', '20')!;
  const rows = new Map<string, { ours: Record<string, unknown>[]; torch: Record<string, unknown>[] }>();
  for (let round = 0; round < rounds; round++) {
    for (const model of models) {
      const batch = arg('batch', '') || (model === 'mbf' ? '32' : model === 'r100' ? '8' : '16');
      const ours = () => runRow(process.execPath, ['--import', 'tsx', self, '--child', 'ort', model, '--seconds', seconds, '--batch', batch], budget);
      const torch = () => runRow(python, [torchScript, '--model', model, '--batch', batch, '--seconds', seconds, '--threads', String(os.availableParallelism())], budget);
      const pair = round % 2 === 0 ? [ours(), torch()] : [torch(), ours()].reverse();
      const [a, b] = pair;
      const entry = rows.get(model) ?? { ours: [], torch: [] };
      rows.set(model, entry);
      for (const [side, row] of [['ours', a], ['torch', b]] as const) {
        if (!row) continue;
        entry[side].push(row);
        emit({ ...row, round });
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const spread = (xs: number[]) => ({ median: +median(xs).toFixed(3), min: +Math.min(...xs).toFixed(3), max: +Math.max(...xs).toFixed(3) });
  for (const [model, { ours, torch }] of rows) {
    const n = Math.min(ours.length, torch.length);
    if (!n) continue;
    // Per-round ratios: each pair ran back to back, under the same load.
    const speed = Array.from({ length: n }, (_, i) => Number(ours[i]!.imgPerSec) / Number(torch[i]!.imgPerSec));
    const rss = Array.from({ length: n }, (_, i) => Number(ours[i]!.peakRssMiB) / Number(torch[i]!.peakRssMiB));
    const cpu = Array.from({ length: n }, (_, i) => Number(torch[i]!.cpuMsPerStep) / Number(ours[i]!.cpuMsPerStep));
    emit({
      bench: 'train-vs-torch',
      model,
      batch: ours[0]!.batch,
      rounds: n,
      speedRatio: spread(speed),
      rssRatio: spread(rss),
      // PyTorch's CPU time per step over ours: the speed ratio with less of the machine's load in it.
      cpuTimeRatio: spread(cpu),
      imgPerSec: { ours: median(ours.map((r) => Number(r.imgPerSec))), torch: median(torch.map((r) => Number(r.imgPerSec))) },
      peakRssMiB: { ours: median(ours.map((r) => Number(r.peakRssMiB))), torch: median(torch.map((r) => Number(r.peakRssMiB))) },
      torch: torch[0]!.engine,
      load1: +os.loadavg()[0]!.toFixed(2),
    });
  }
}

function lastLine(s: string): string {
  return s.trim().split('\n').filter((l) => l.trim()).slice(-3).join(' | ').slice(0, 300);
}

const i = process.argv.indexOf('--child');
if (i >= 0) await child(process.argv[i + 1]!, process.argv[i + 2]!);
else if (process.argv.includes('--vs-torch')) vsTorch();
else parent();
