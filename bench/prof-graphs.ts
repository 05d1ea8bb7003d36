// Per-operator time inside the compiled training graphs (onnxruntime's own profiler), one JSON line per
// graph: node --import tsx bench/prof-graphs.ts --model r18 [--batch 16] [--runs 3] [--lean 0|1] [--step]
// (--step: the one-graph training step with an ArcFace head over 1,000 classes, as trainStep runs it).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { buildBackbone, resolveSpec } from '../src/models/factory.ts';
import { compileTrainingGraphs, compileTrainingStep } from '../src/onnx/training.ts';
import { nchwcBlock } from '../src/ort/train.ts';
import { arg, emit, tf } from './common.ts';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
await tf.setBackend('cpu');
const model = arg('model', 'r18')!;
const batch = Number(arg('batch', model === 'mbf' ? '32' : '16'));
const runs = Number(arg('runs', '3'));
const lean = arg('lean', '0') === '1';
const backbone = buildBackbone(resolveSpec({ network: model }), { seed: 1 });
const g = compileTrainingGraphs(backbone, { batch, recompute: lean ? 'all' : 'bn', nchwcBlock: nchwcBlock() });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prof-'));
const rand = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
const paramData = new Map(g.params.map((p) => [p.name, { data: p.variable.read().dataSync() as Float32Array, dims: p.variable.shape as number[] }]));

async function profile(name: string, bytes: Uint8Array, feeds: Record<string, import('onnxruntime-node').Tensor>) {
  const s = await ort.InferenceSession.create(bytes, {
    enableMemPattern: !process.argv.includes('--step'),
    intraOpNumThreads: os.availableParallelism(), interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
    enableProfiling: true, profileFilePrefix: path.join(dir, name), extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  let out: Record<string, import('onnxruntime-node').Tensor> = {};
  const wall: number[] = [];
  for (let i = 0; i < runs + 1; i++) { const t = performance.now(); out = await s.run(feeds); wall.push(performance.now() - t); }
  s.endProfiling();
  await s.release();
  const file = fs.readdirSync(dir).filter((f) => f.startsWith(name)).map((f) => path.join(dir, f)).pop()!;
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as { cat: string; name: string; dur: number; args?: { op_name?: string } }[];
  const byOp: Record<string, number> = {};
  const byNode: Record<string, number> = {};
  const byPart: Record<string, number> = {};
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    byOp[op] = (byOp[op] ?? 0) + e.dur / 1000 / (runs + 1);
    byNode[e.name] = (byNode[e.name] ?? 0) + e.dur / 1000 / (runs + 1);
    const part = PARTS.find(([, re]) => re.test(e.name))?.[0] ?? `other ${op}`;
    byPart[part] = (byPart[part] ?? 0) + e.dur / 1000 / (runs + 1);
  }
  const top = (o: Record<string, number>, k: number) => Object.fromEntries(Object.entries(o).sort((a, b) => b[1] - a[1]).slice(0, k).map(([a, b]) => [a, +b.toFixed(1)]));
  const total = Object.values(byOp).reduce((a, b) => a + b, 0);
  emit({ graph: name, model, batch, wallMs: wall.map((w) => +w.toFixed(0)), kernelMs: +total.toFixed(0), byOp: top(byOp, 25), byPart: top(byPart, 30), topNodes: top(byNode, Number(arg('nodes', '15'))) });
  return out;
}

/** What each node is for, by the names the compiler gives them. */
const PARTS: [string, RegExp][] = [
  ['conv dX', /\.dx\/(Conv|ConvTranspose)/],
  ['conv dW unfold', /\.unfold\//],
  ['conv dW product', /\.(mm|dwn|gemm)\//],
  ['conv forward', /\/Conv(_\d+)?_kernel_time$/],
  ['weight layout', /\.(k2|kT|kT2|k3|w_oihw|kflip|f3|f4|fT|w_dx|d3|dT2|d2|dT|dk)\//],
  ['dW layout', /\.(colT|col4|col2|dyT|dy2|xT|x_cn|x_planes|x3|dy3)\//],
  ['bn forward stats', /\.(mean|d|ss|var)\//],
  ['bn backward', /\.(dbeta|dyx|sdyx|dgamma|dyg|xcb|dx|xcB|negmB|B|C|grr|mdg|mdb|gr)\//],
  ['prelu backward', /prelu.*\.(neg|dyn|da|pos|dya|dx)\/|\.layers\.2\.(neg|dyn|da|pos|dya|dx)\//],
  ['head', /^head\./],
];
const T = (d: Float32Array, dims: readonly number[]) => new ort.Tensor('float32', d, dims as number[]);
if (process.argv.includes('--step')) {
  const classes = 1000;
  const step = compileTrainingStep(backbone, { batch, recompute: lean ? 'all' : 'bn', nchwcBlock: nchwcBlock() }, { classes, s: 64, path: 'arcface', m2: 0.5, m3: 0, threshold: 0 });
  const d = g.output.dims[1]!;
  const onehot = new Float32Array(batch * classes);
  for (let i = 0; i < batch; i++) onehot[i * classes + ((i * 37) % classes)] = 1;
  const feeds: Record<string, import('onnxruntime-node').Tensor> = {
    [step.input.name]: T(rand(step.input.size), step.input.dims),
    [step.head.weight]: T(rand(classes * d).map((v) => v * 0.01), [classes, d]),
    [step.head.onehot]: T(onehot, [batch, classes]),
  };
  for (const p of step.params) feeds[p.name] = T(paramData.get(p.name)!.data, paramData.get(p.name)!.dims);
  await profile('step', step.model, feeds);
  process.exit(0);
}
const ffeeds: Record<string, import('onnxruntime-node').Tensor> = { [g.input.name]: T(rand(g.input.size), g.input.dims) };
for (const p of g.params) ffeeds[p.name] = T(paramData.get(p.name)!.data, paramData.get(p.name)!.dims);
const fo = await profile('forward', g.forward, ffeeds);
const bfeeds: Record<string, import('onnxruntime-node').Tensor> = {};
for (const n of g.backwardInputs) {
  if (n === `grad:${g.output.name}`) bfeeds[n] = T(rand(g.output.size), g.output.dims);
  else if (paramData.has(n)) bfeeds[n] = T(paramData.get(n)!.data, paramData.get(n)!.dims);
  else bfeeds[n] = fo[n]!;
}
await profile('backward', g.backward, bfeeds);
