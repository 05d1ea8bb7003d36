// Forward (inference) throughput of the backbones on every backend present, one JSON line per config.
//   node --import tsx bench/forward.ts [--models r18,r50,r100,mbf] [--batches 1,8] [--backends ort,wasm,cpu,webgpu]
//        [--onnx] [--onnx-variants plain,ortcpu] [--no-predict] [--no-compiled] [--budget 120] [--seconds 3]
// Engines:
//   tfjs-<backend>           model.predict, one tfjs kernel per layer (a row whose single pass would take
//                            longer than the budget is reported as skipped)
//   tfjs-<ort>-compiled      on the ort / ort-cpu backends: the backbone compiled once into one onnxruntime
//                            graph (src/ort/infer.ts), tfjs tensor in, tfjs tensor out; compileMs is
//                            the one-off export + session load
//   onnxruntime-node-Nt      (--onnx) the torch-shaped export (exportOnnx, BN folded, opset 13), as a user's
//                            .onnx file, through ort.InferenceSession on all cores
//   onnxruntime-node-ortcpu-Nt  (--onnx) the same model exported with `ortCpu` (PReLU rewritten for ORT's
//                            NCHWc kernels), as `arcface export --format onnx --ort-cpu` writes it
// Every row carries the 1-minute load average and otherCpu, the cores other processes used while it was
// timed (the machine may be shared: trust rows with otherCpu near 0). peakRssMiB is the process's peak so far.
import fs from 'node:fs';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildBackbone } from '../src/models/factory.ts';
import { initBackend } from '../src/backend/select.ts';
import { backendCaps } from '../src/backend/caps.ts';
import { compileForInference } from '../src/ort/infer.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { describeAdapter, webgpuAdapter } from '../src/backend/webgpu.ts';
import { GMACS_112, arg, emit, peakRssMiB, presentBackends, tf, timeIt } from './common.ts';

const load1 = () => +os.loadavg()[0]!.toFixed(2);

/** Busy CPU-seconds of the whole machine (all cores) from /proc/stat, or NaN where there is none. */
function machineBusySeconds(): number {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) / 100;
  } catch {
    return NaN;
  }
}

/** Times `fn` (common.ts timeIt) and measures the cores other processes used meanwhile. */
async function timed(fn: () => Promise<void> | void, seconds: number): Promise<{ medianMs: number; runs: number; otherCpu: number | null }> {
  const b0 = machineBusySeconds();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await timeIt(fn, seconds);
  const mine = process.cpuUsage(c0);
  const other = (machineBusySeconds() - b0 - (mine.user + mine.system) / 1e6) / ((performance.now() - t0) / 1000);
  return { ...r, otherCpu: Number.isFinite(other) ? +Math.max(0, other).toFixed(2) : null };
}

const models = (arg('models', 'r18,r50,r100,mbf') ?? '').split(',');
const batches = (arg('batches', '1,8') ?? '').split(',').map(Number);
const budgetS = Number(arg('budget', '120'));
const seconds = Number(arg('seconds', '3'));
const withPredict = !process.argv.includes('--no-predict');
const withCompiled = !process.argv.includes('--no-compiled');
const onnxVariants = (arg('onnx-variants', 'plain,ortcpu') ?? '').split(',');
const backends = await presentBackends(arg('backends', 'ort,wasm,cpu'));

function figures(network: string, batch: number, medianMs: number) {
  const gflop = 2 * GMACS_112[network]! * batch;
  return { imgPerSec: +((batch * 1000) / medianMs).toFixed(2), msPerBatch: +medianMs.toFixed(1), gflops: +(gflop / (medianMs / 1000)).toFixed(1) };
}

/** One forward pass read back asynchronously (webgpu has no synchronous read in Node). */
async function predict(model: tf.LayersModel, x: tf.Tensor): Promise<void> {
  const y = model.predict(x) as tf.Tensor;
  await y.data();
  y.dispose();
}

for (const backend of backends) {
  await initBackend(backend, { quiet: true });
  const gpu = backend === 'webgpu' ? webgpuAdapter() : null;
  for (const network of models) {
    const model = buildBackbone({ network }, { seed: 1 });
    let secondsPerImage = 0;
    for (const batch of withPredict ? batches : []) {
      const row = { bench: 'forward', engine: `tfjs-${backend}`, model: network, batch, ...(gpu ? { adapter: describeAdapter(gpu) } : {}) };
      if (secondsPerImage * batch > budgetS) {
        emit({ ...row, skipped: `one pass would take ~${Math.round(secondsPerImage * batch)} s (> budget ${budgetS} s)`, load1: load1() });
        continue;
      }
      const x = tf.randomUniform([batch, 112, 112, 3], -1, 1);
      const probe = performance.now();
      await predict(model, x);
      secondsPerImage = (performance.now() - probe) / 1000 / batch;
      if (secondsPerImage * batch * 4 > budgetS) {
        emit({ ...row, ...figures(network, batch, secondsPerImage * batch * 1000), runs: 1, note: 'single timed pass (slow backend)', peakRssMiB: peakRssMiB(), load1: load1() });
        x.dispose();
        continue;
      }
      const { medianMs, runs, otherCpu } = await timed(() => predict(model, x), seconds);
      emit({ ...row, ...figures(network, batch, medianMs), runs, peakRssMiB: peakRssMiB(), otherCpu, load1: load1() });
      x.dispose();
    }
    if (withCompiled && backendCaps(backend).ortEngine) {
      const t0 = performance.now();
      const compiled = compileForInference(model, { cache: false });
      const compileMs = Math.round(performance.now() - t0);
      for (const batch of batches) {
        const x = tf.randomUniform([batch, 112, 112, 3], -1, 1) as tf.Tensor4D;
        const { medianMs, runs, otherCpu } = await timed(() => {
          tf.tidy(() => compiled.predict(x).dataSync());
        }, seconds);
        emit({ bench: 'forward', engine: `tfjs-${backend}-compiled`, model: network, batch, ...figures(network, batch, medianMs), runs, compileMs, peakRssMiB: peakRssMiB(), otherCpu, load1: load1() });
        x.dispose();
      }
      compiled.dispose();
    }
    model.dispose();
  }
}

if (process.argv.includes('--onnx')) {
  const threads = os.availableParallelism();
  for (const network of models) {
    const model = buildBackbone({ network }, { seed: 1 });
    const variants = [
      { engine: `onnxruntime-node-${threads}t`, ortCpu: false, key: 'plain' },
      { engine: `onnxruntime-node-ortcpu-${threads}t`, ortCpu: true, key: 'ortcpu' },
    ].filter((v) => onnxVariants.includes(v.key));
    for (const v of variants) {
      const bytes = exportOnnx(model, { opset: 13, foldBatchNorm: true, ortCpu: v.ortCpu });
      const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
      for (const batch of batches) {
        const data = new Float32Array(batch * 3 * 112 * 112).map(() => Math.random() * 2 - 1);
        const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', data, [batch, 3, 112, 112]) };
        const { medianMs, runs, otherCpu } = await timed(async () => {
          await session.run(feeds);
        }, seconds);
        emit({ bench: 'forward', engine: v.engine, model: network, batch, ...figures(network, batch, medianMs), runs, peakRssMiB: peakRssMiB(), otherCpu, load1: load1() });
      }
      await session.release();
    }
    model.dispose();
  }
}
