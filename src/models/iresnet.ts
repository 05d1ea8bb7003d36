// IResNet (insightface `backbones/iresnet.py`) as a tfjs functional model, NHWC.
// Layer names are the PyTorch module paths (`layer2.0.conv1`), so weights map one to one.
import * as tf from '@tensorflow/tfjs';
import { batchNorm, conv, prelu, seedStream } from './layers.ts';

type Sym = tf.SymbolicTensor;

export const IRESNET_LAYERS = {
  r18: [2, 2, 2, 2],
  r34: [3, 4, 6, 3],
  r50: [3, 4, 14, 3],
  r100: [3, 13, 30, 3],
  r200: [6, 26, 60, 6],
} as const satisfies Record<string, readonly [number, number, number, number]>;

export type IResNetName = keyof typeof IRESNET_LAYERS;

export interface IResNetOptions {
  /** Blocks per stage (r50 = [3, 4, 14, 3]). */
  layers: readonly number[];
  /** Embedding size (insightface `num_features`). */
  embeddingSize?: number;
  /** Stage widths; the reference is fixed at 64, 128, 256, 512. */
  widths?: readonly number[];
  /** Square input side; the head's flatten size follows (side / 16)^2. */
  inputSize?: number;
  /** Dropout before `fc` (the reference trains with 0). */
  dropout?: number;
  /** Seed for the reference initialisation; omit for a random one. */
  seed?: number;
  name?: string;
}

function basicBlock(x: Sym, prefix: string, planes: number, stride: number, downsample: boolean, next: () => number | undefined): Sym {
  const init = () => tf.initializers.randomNormal({ mean: 0, stddev: 0.1, seed: next() });
  let out = batchNorm(`${prefix}.bn1`, x);
  out = conv(`${prefix}.conv1`, out, { filters: planes, kernel: 3, pad: 1, init: init() });
  out = batchNorm(`${prefix}.bn2`, out);
  out = prelu(`${prefix}.prelu`, out);
  out = conv(`${prefix}.conv2`, out, { filters: planes, kernel: 3, stride, pad: 1, init: init() });
  out = batchNorm(`${prefix}.bn3`, out);
  let identity = x;
  if (downsample) {
    identity = conv(`${prefix}.downsample.0`, x, { filters: planes, kernel: 1, stride, init: init() });
    identity = batchNorm(`${prefix}.downsample.1`, identity);
  }
  return tf.layers.add({ name: `${prefix}.add` }).apply([out, identity]) as Sym;
}

/** Builds an IResNet backbone: image [N, S, S, 3] normalised to [-1, 1] -> raw embedding [N, E]. */
export function iresnet(opts: IResNetOptions): tf.LayersModel {
  const layers = opts.layers;
  const widths = opts.widths ?? [64, 128, 256, 512];
  const inputSize = opts.inputSize ?? 112;
  const embeddingSize = opts.embeddingSize ?? 512;
  if (layers.length !== 4 || widths.length !== 4) throw new Error('IResNet needs 4 stages: layers and widths have 4 entries');
  if (inputSize % 16 !== 0) throw new Error(`IResNet input size must be a multiple of 16, got ${inputSize}`);
  const next = seedStream(opts.seed);
  const convInit = () => tf.initializers.randomNormal({ mean: 0, stddev: 0.1, seed: next() });

  const input = tf.input({ shape: [inputSize, inputSize, 3], name: 'data' });
  let x = conv('conv1', input, { filters: widths[0]!, kernel: 3, pad: 1, init: convInit() });
  x = batchNorm('bn1', x);
  x = prelu('prelu', x);
  for (let s = 0; s < 4; s++) {
    for (let b = 0; b < layers[s]!; b++) {
      // Every stage opens with a stride-2 block whose shortcut is a projection.
      x = basicBlock(x, `layer${s + 1}.${b}`, widths[s]!, b === 0 ? 2 : 1, b === 0, next);
    }
  }
  x = batchNorm('bn2', x);
  // NHWC flatten: checkpoint import/export permutes `fc` rows to and from torch's NCHW order.
  x = tf.layers.flatten({ name: 'flatten' }).apply(x) as Sym;
  if (opts.dropout) x = tf.layers.dropout({ name: 'dropout', rate: opts.dropout }).apply(x) as Sym;
  const fanIn = x.shape[1]!;
  const bound = 1 / Math.sqrt(fanIn); // torch.nn.Linear's default init
  x = tf.layers
    .dense({
      name: 'fc',
      units: embeddingSize,
      useBias: true,
      kernelInitializer: tf.initializers.randomUniform({ minval: -bound, maxval: bound, seed: next() }),
      biasInitializer: tf.initializers.randomUniform({ minval: -bound, maxval: bound, seed: next() }),
    })
    .apply(x) as Sym;
  // The reference freezes this BatchNorm1d's gamma at 1: a BN without scale is exactly that.
  const out = batchNorm('features', x, { scale: false });
  return tf.model({ inputs: input, outputs: out, name: opts.name ?? 'iresnet' });
}
