// Forward (inference) throughput of the backbones on every backend present, one JSON line per config.
//   node --import tsx bench/forward.ts [--models r18,r50,r100,mbf] [--batches 1,8] [--backends ort,wasm,cpu]
//        [--onnx] [--budget 120]
// A row whose single forward pass would take longer than the budget is reported as skipped. --onnx adds
// onnxruntime-node rows: the backbone exported with exportOnnx (BN folded) run by ort.InferenceSession
// on all cores. Every row carries the 1-minute load average (the machine may be shared).
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { buildBackbone } from '../src/models/factory.ts';
import { initBackend } from '../src/backend/select.ts';
import { exportOnnx } from '../src/convert/onnx/export.ts';
import { GMACS_112, arg, emit, peakRssMiB, presentBackends, tf, timeIt } from './common.ts';

const load1 = () => +os.loadavg()[0]!.toFixed(2);

const models = (arg('models', 'r18,r50,r100,mbf') ?? '').split(',');
const batches = (arg('batches', '1,8') ?? '').split(',').map(Number);
const budgetS = Number(arg('budget', '120'));
const backends = await presentBackends(arg('backends', 'ort,wasm,cpu'));

for (const backend of backends) {
  await initBackend(backend, { quiet: true });
  for (const network of models) {
    const model = buildBackbone({ network }, { seed: 1 });
    let secondsPerImage = 0;
    for (const batch of batches) {
      const gflop = 2 * GMACS_112[network]! * batch;
      const row = { bench: 'forward', engine: `tfjs-${backend}`, model: network, batch };
      if (secondsPerImage * batch > budgetS) {
        emit({ ...row, skipped: `one pass would take ~${Math.round(secondsPerImage * batch)} s (> budget ${budgetS} s)` });
        continue;
      }
      const x = tf.randomUniform([batch, 112, 112, 3], -1, 1);
      const probe = performance.now();
      tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync());
      secondsPerImage = (performance.now() - probe) / 1000 / batch;
      if (secondsPerImage * batch * 4 > budgetS) {
        emit({ ...row, imgPerSec: +(1 / secondsPerImage).toFixed(2), gflops: +(gflop / (secondsPerImage * batch)).toFixed(1), runs: 1, note: 'single timed pass (slow backend)', peakRssMiB: peakRssMiB() });
        x.dispose();
        continue;
      }
      const { medianMs, runs } = await timeIt(() => {
        tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync());
      });
      emit({ ...row, imgPerSec: +((batch * 1000) / medianMs).toFixed(2), msPerBatch: +medianMs.toFixed(1), gflops: +(gflop / (medianMs / 1000)).toFixed(1), runs, peakRssMiB: peakRssMiB(), load1: load1() });
      x.dispose();
    }
    model.dispose();
  }
}

if (process.argv.includes('--onnx')) {
  const threads = os.availableParallelism();
  for (const network of models) {
    const model = buildBackbone({ network }, { seed: 1 });
    const bytes = exportOnnx(model, { opset: 13, foldBatchNorm: true });
    model.dispose();
    const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
    for (const batch of batches) {
      const data = new Float32Array(batch * 3 * 112 * 112).map(() => Math.random() * 2 - 1);
      const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', data, [batch, 3, 112, 112]) };
      const { medianMs, runs } = await timeIt(async () => {
        await session.run(feeds);
      });
      const gflop = 2 * GMACS_112[network]! * batch;
      emit({ bench: 'forward', engine: `onnxruntime-node-${threads}t`, model: network, batch, imgPerSec: +((batch * 1000) / medianMs).toFixed(2), msPerBatch: +medianMs.toFixed(1), gflops: +(gflop / (medianMs / 1000)).toFixed(1), runs, peakRssMiB: peakRssMiB(), load1: load1() });
    }
    await session.release();
  }
}
