// MobileFaceNet (insightface `backbones/mobilefacenet.py`) as a tfjs functional model, NHWC.
// Layer names are the PyTorch module paths (`layers.3.layers.0.layers.1.layers.0`).
import * as tf from '@tensorflow/tfjs';
import { batchNorm, conv, kaimingFanOut, prelu, seedStream } from './layers.ts';

type Sym = tf.SymbolicTensor;

export interface MobileFaceNetOptions {
  embeddingSize?: number;
  /** Blocks of the four residual stacks; `mbf` = [1, 4, 6, 2], `mbf_large` = [2, 8, 12, 4]. */
  blocks?: readonly number[];
  /** Width multiplier; `mbf` = 2, `mbf_large` = 4. */
  scale?: number;
  inputSize?: number;
  seed?: number;
  name?: string;
}

interface Ctx {
  next: () => number | undefined;
}

function convBlock(c: Ctx, p: string, x: Sym, out: number, k: number, s: number, pad: number, groups: number, act: boolean): Sym {
  x = conv(`${p}.layers.0`, x, { filters: out, kernel: k, stride: s, pad, groups, init: kaimingFanOut(out, k, c.next()) });
  x = batchNorm(`${p}.layers.1`, x);
  return act ? prelu(`${p}.layers.2`, x) : x;
}

function depthWise(c: Ctx, p: string, x: Sym, out: number, residual: boolean, stride: number, groups: number): Sym {
  let y = convBlock(c, `${p}.layers.0`, x, groups, 1, 1, 0, 1, true);
  y = convBlock(c, `${p}.layers.1`, y, groups, 3, stride, 1, groups, true);
  y = convBlock(c, `${p}.layers.2`, y, out, 1, 1, 0, 1, false);
  return residual ? (tf.layers.add({ name: `${p}.add` }).apply([x, y]) as Sym) : y;
}

function residualStack(c: Ctx, p: string, x: Sym, channels: number, n: number, groups: number): Sym {
  for (let i = 0; i < n; i++) x = depthWise(c, `${p}.layers.${i}`, x, channels, true, 1, groups);
  return x;
}

/** Builds a MobileFaceNet backbone: image [N, S, S, 3] in [-1, 1] -> raw embedding [N, E]. */
export function mobileFaceNet(opts: MobileFaceNetOptions = {}): tf.LayersModel {
  const blocks = opts.blocks ?? [1, 4, 6, 2];
  const scale = opts.scale ?? 2;
  const inputSize = opts.inputSize ?? 112;
  const embeddingSize = opts.embeddingSize ?? 512;
  if (blocks.length !== 4) throw new Error('MobileFaceNet needs 4 block counts');
  if (inputSize % 16 !== 0) throw new Error(`MobileFaceNet input size must be a multiple of 16, got ${inputSize}`);
  const c: Ctx = { next: seedStream(opts.seed) };

  const input = tf.input({ shape: [inputSize, inputSize, 3], name: 'data' });
  let x = convBlock(c, 'layers.0', input, 64 * scale, 3, 2, 1, 1, true);
  x =
    blocks[0] === 1
      ? convBlock(c, 'layers.1', x, 64 * scale, 3, 1, 1, 64, true) // grouped: 64 groups
      : residualStack(c, 'layers.1', x, 64 * scale, blocks[0]!, 128);
  x = depthWise(c, 'layers.2', x, 64 * scale, false, 2, 128);
  x = residualStack(c, 'layers.3', x, 64 * scale, blocks[1]!, 128);
  x = depthWise(c, 'layers.4', x, 128 * scale, false, 2, 256);
  x = residualStack(c, 'layers.5', x, 128 * scale, blocks[2]!, 256);
  x = depthWise(c, 'layers.6', x, 128 * scale, false, 2, 512);
  x = residualStack(c, 'layers.7', x, 128 * scale, blocks[3]!, 256);
  x = convBlock(c, 'conv_sep', x, 512, 1, 1, 0, 1, true);
  // GDC head: 7x7 (input/16) depthwise "linear" conv, flatten, bias-free linear, BatchNorm1d.
  const k = inputSize / 16;
  x = convBlock(c, 'features.layers.0', x, 512, k, 1, 0, 512, false);
  x = tf.layers.flatten({ name: 'features.layers.1' }).apply(x) as Sym;
  x = tf.layers
    .dense({ name: 'features.layers.2', units: embeddingSize, useBias: false, kernelInitializer: kaimingFanOut(embeddingSize, 1, c.next()) })
    .apply(x) as Sym;
  const out = batchNorm('features.layers.3', x);
  return tf.model({ inputs: input, outputs: out, name: opts.name ?? 'mobilefacenet' });
}
