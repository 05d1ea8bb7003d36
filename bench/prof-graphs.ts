// Per-operator time inside the compiled training graphs (onnxruntime's own profiler), one JSON line per
// graph: node --import tsx bench/prof-graphs.ts --model r18 [--batch 16] [--runs 3] [--lean 0|1]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { buildBackbone, resolveSpec } from '../src/models/factory.ts';
import { compileTrainingGraphs } from '../src/onnx/training.ts';
import { arg, emit, tf } from './common.ts';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
await tf.setBackend('cpu');
const model = arg('model', 'r18')!;
const batch = Number(arg('batch', model === 'mbf' ? '32' : '16'));
const runs = Number(arg('runs', '3'));
const lean = arg('lean', '0') === '1';
const backbone = buildBackbone(resolveSpec({ network: model }), { seed: 1 });
const g = compileTrainingGraphs(backbone, { batch, recompute: lean ? 'all' : 'bn' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prof-'));
const rand = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
const paramData = new Map(g.params.map((p) => [p.name, { data: p.variable.read().dataSync() as Float32Array, dims: p.variable.shape as number[] }]));

async function profile(name: string, bytes: Uint8Array, feeds: Record<string, import('onnxruntime-node').Tensor>) {
  const s = await ort.InferenceSession.create(bytes, {
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
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? '?';
    byOp[op] = (byOp[op] ?? 0) + e.dur / 1000 / (runs + 1);
    byNode[e.name] = (byNode[e.name] ?? 0) + e.dur / 1000 / (runs + 1);
  }
  const top = (o: Record<string, number>, k: number) => Object.fromEntries(Object.entries(o).sort((a, b) => b[1] - a[1]).slice(0, k).map(([a, b]) => [a, +b.toFixed(1)]));
  const total = Object.values(byOp).reduce((a, b) => a + b, 0);
  emit({ graph: name, model, batch, wallMs: wall.map((w) => +w.toFixed(0)), kernelMs: +total.toFixed(0), byOp: top(byOp, 25), topNodes: top(byNode, Number(arg('nodes', '15'))) });
  return out;
}

const T = (d: Float32Array, dims: readonly number[]) => new ort.Tensor('float32', d, dims as number[]);
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
