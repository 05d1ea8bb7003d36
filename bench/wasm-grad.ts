// Throughput of the wasm gradient kernels (src/backend/wasm-grad.ts), one JSON line per measurement:
//   node --import tsx bench/wasm-grad.ts [--reps N]
// GFLOP/s counts the useful multiply-adds of the forward convolution (2 * N*Ho*Wo*kh*kw*Ci*Co),
// the same work every gradient does. For comparison it also times the forward conv and wasm's own
// (replaced) Conv2DBackpropInput.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { initBackend } from '../src/backend/select.ts';

const repsArg = process.argv.indexOf('--reps');
const REPS = repsArg > 0 ? Number(process.argv[repsArg + 1]) : 3;

// Saved before initBackend replaces it with ours.
const builtinBackpropInput = tf.getKernel('Conv2DBackpropInput', 'wasm');

await initBackend('wasm', { quiet: true });

interface Config {
  name: string;
  input: [number, number, number, number];
  k: number;
  out: number;
  stride: number;
  depthwise: boolean;
}

const CONFIGS: Config[] = [
  { name: 'conv3x3 64->64 s1', input: [16, 56, 56, 64], k: 3, out: 64, stride: 1, depthwise: false },
  { name: 'conv3x3 64->64 s2', input: [16, 56, 56, 64], k: 3, out: 64, stride: 2, depthwise: false },
  { name: 'conv1x1 64->128 s2', input: [16, 56, 56, 64], k: 1, out: 128, stride: 2, depthwise: false },
  { name: 'depthwise3x3 128 s1', input: [16, 56, 56, 128], k: 3, out: 1, stride: 1, depthwise: true },
  { name: 'depthwise3x3 128 s2', input: [16, 56, 56, 128], k: 3, out: 1, stride: 2, depthwise: true },
];

/** Median wall time (ms) of `fn` over REPS runs after one warm-up; the result is read back each time. */
function time(fn: () => tf.Tensor): number {
  const runs: number[] = [];
  for (let i = 0; i <= REPS; i++) {
    const t0 = performance.now();
    const r = fn();
    r.dataSync();
    const dt = performance.now() - t0;
    r.dispose();
    if (i > 0) runs.push(dt);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)];
}

function emit(cfg: Config, op: string, ms: number, flops: number): void {
  const line = {
    bench: 'wasm-grad',
    backend: tf.getBackend(),
    config: cfg.name,
    input: cfg.input,
    kernel: cfg.k,
    stride: cfg.stride,
    op,
    ms: Number(ms.toFixed(2)),
    gflops: Number((flops / ms / 1e6).toFixed(2)),
  };
  process.stdout.write(JSON.stringify(line) + '\n');
}

for (const cfg of CONFIGS) {
  const [n, h, w, c] = cfg.input;
  const ho = Math.ceil(h / cfg.stride);
  const wo = Math.ceil(w / cfg.stride);
  const co = cfg.depthwise ? c * cfg.out : cfg.out;
  const filterShape: [number, number, number, number] = [cfg.k, cfg.k, c, cfg.out];
  const flops = 2 * n * ho * wo * cfg.k * cfg.k * (cfg.depthwise ? co : c * co);
  const x = tf.randomNormal(cfg.input) as tf.Tensor4D;
  const filter = tf.randomNormal(filterShape) as tf.Tensor4D;
  const dy = tf.randomNormal([n, ho, wo, co]) as tf.Tensor4D;
  const attrs = { strides: cfg.stride, pad: 'same', dataFormat: 'NHWC', dilations: 1 };
  const run = (kernel: string, inputs: tf.NamedTensorMap, extra: object) => () =>
    tf.engine().runKernel(kernel, inputs, { ...attrs, ...extra }) as tf.Tensor;
  if (cfg.depthwise) {
    emit(cfg, 'forward', time(() => tf.depthwiseConv2d(x, filter, cfg.stride, 'same')), flops);
    emit(cfg, 'dW', time(run('DepthwiseConv2dNativeBackpropFilter', { x, dy }, { filterShape })), flops);
    emit(cfg, 'dX', time(run('DepthwiseConv2dNativeBackpropInput', { dy, filter }, { inputShape: cfg.input })), flops);
  } else {
    emit(cfg, 'forward', time(() => tf.conv2d(x, filter, cfg.stride, 'same')), flops);
    emit(cfg, 'dW', time(run('Conv2DBackpropFilter', { x, dy }, { filterShape })), flops);
    emit(cfg, 'dX', time(run('Conv2DBackpropInput', { dy, filter }, { inputShape: cfg.input })), flops);
    if (builtinBackpropInput != null && cfg.stride === 1 && cfg.k === 3) {
      const backend = tf.backend();
      builtinBackpropInput.setupFunc?.(backend);
      const builtin = () =>
        tf.engine().makeTensorFromTensorInfo(
          builtinBackpropInput.kernelFunc({
            inputs: { dy, filter },
            attrs: { ...attrs, inputShape: cfg.input },
            backend,
          }) as tf.TensorInfo,
        );
      emit(cfg, 'dX (wasm builtin, replaced)', time(builtin), flops);
    }
  }
  tf.dispose([x, filter, dy]);
}
