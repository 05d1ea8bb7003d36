// Maps insightface state dicts onto this project's tfjs backbones and back. Layer names already are the
// PyTorch module paths; what changes is the layout of each weight: conv OIHW <-> HWIO, depthwise
// [C,1,k,k] <-> [k,k,C,1], linear [out,in] <-> [in,out], PReLU [C] <-> [1,1,C], and the NCHW flatten
// feeding IResNet's `fc` (torch index c*H*W + y*W + x) vs this model's NHWC flatten ((y*W + x)*C + c).
import * as tf from '@tensorflow/tfjs';
import type { TorchTensor, TorchTensorOut } from '../formats/torch.ts';
import { transposeArray } from '../util/transpose.ts';
import { depthwiseToOihw, hwioToOihw } from '../onnx/layers/conv.ts';

const BN_EPS = 1e-5;

/** One weight of a tfjs layer and where it lives in a torch state dict. */
export interface WeightSlot {
  layer: tf.layers.Layer;
  variable: tf.LayerVariable;
  torchKey: string;
  /** torch layout -> tfjs layout. */
  toTf: (data: Float32Array, torchShape: number[]) => Float32Array;
  /** tfjs layout -> torch layout. */
  toTorch: (data: Float32Array) => Float32Array;
  torchShape: number[];
}

/** For a Dense fed by Flatten of an [H,W,C] map: row permutation between NHWC and NCHW flatten orders. */
function flattenOrder(layer: tf.layers.Layer): [number, number, number] | null {
  const inbound = layer.inboundNodes[0]?.inboundLayers[0];
  if (!inbound || inbound.getClassName() !== 'Flatten') return null;
  const shape = inbound.inboundNodes[0]?.inputShapes as tf.Shape | undefined;
  const s = Array.isArray(shape?.[0]) ? (shape![0] as unknown as tf.Shape) : shape;
  if (!s || s.length !== 4) return null;
  const [, h, w, c] = s as number[];
  return h! * w! > 1 ? [h!, w!, c!] : null;
}

/** Every weight of the model with its torch key and layout conversions (BN running statistics included). */
export function slotsOf(model: tf.LayersModel): WeightSlot[] {
  const slots: WeightSlot[] = [];
  const id = (d: Float32Array) => d;
  for (const layer of model.layers) {
    const cls = layer.getClassName();
    const name = layer.name;
    const ws = layer.weights;
    const byName = (suffix: string) => ws.find((w) => w.originalName.endsWith(`/${suffix}`) || w.name.endsWith(`/${suffix}`));
    const add = (suffix: string, torchKey: string, torchShape: number[], toTf: WeightSlot['toTf'], toTorch: WeightSlot['toTorch']) => {
      const variable = byName(suffix);
      if (variable) slots.push({ layer, variable, torchKey, toTf, toTorch, torchShape });
    };
    if (cls === 'Conv2D' || cls === 'GroupedConv2D') {
      const [kh, kw, ci, co] = byName('kernel')!.shape as number[];
      add('kernel', `${name}.weight`, [co!, ci!, kh!, kw!], (d, s) => transposeArray(d, s, [2, 3, 1, 0]), (d) =>
        hwioToOihw(d, [kh!, kw!, ci!, co!]).weight,
      );
      add('bias', `${name}.bias`, [co!], id, id);
    } else if (cls === 'DepthwiseConv2D') {
      const [kh, kw, c, m] = byName('depthwise_kernel')!.shape as number[];
      add('depthwise_kernel', `${name}.weight`, [c! * m!, 1, kh!, kw!], (d) => transposeArray(d, [c!, m!, kh!, kw!], [2, 3, 0, 1]), (d) =>
        depthwiseToOihw(d, [kh!, kw!, c!, m!]).weight,
      );
      add('bias', `${name}.bias`, [c! * m!], id, id);
    } else if (cls === 'BatchNormalization') {
      const c = byName('beta')!.shape[0]!;
      add('gamma', `${name}.weight`, [c], id, id);
      add('beta', `${name}.bias`, [c], id, id);
      add('moving_mean', `${name}.running_mean`, [c], id, id);
      add('moving_variance', `${name}.running_var`, [c], id, id);
    } else if (cls === 'PReLU') {
      const c = (byName('alpha')!.shape as number[]).reduce((a, b) => a * b, 1);
      add('alpha', `${name}.weight`, [c], id, id);
    } else if (cls === 'Dense') {
      const [inF, outF] = byName('kernel')!.shape as number[];
      const hwc = flattenOrder(layer);
      // torch [out, in_nchw] -> tfjs [in_nhwc, out]
      const toTf = (d: Float32Array) => {
        let k = transposeArray(d, [outF!, inF!], [1, 0]); // [in_nchw, out]
        if (hwc) k = transposeArray(k, [hwc[2], hwc[0], hwc[1], outF!], [1, 2, 0, 3]);
        return k;
      };
      const toTorch = (d: Float32Array) => {
        let k = d;
        if (hwc) k = transposeArray(k, [hwc[0], hwc[1], hwc[2], outF!], [2, 0, 1, 3]);
        return transposeArray(k, [inF!, outF!], [1, 0]);
      };
      add('kernel', `${name}.weight`, [outF!, inF!], toTf, toTorch);
      add('bias', `${name}.bias`, [outF!], id, id);
    } else if (ws.length > 0) {
      throw new Error(`layer "${name}" (${cls}) has weights but no torch mapping`);
    }
  }
  return slots;
}

/** BatchNorms built without gamma stand for torch BNs whose gamma is frozen at 1 (IResNet's `features`). */
function scaleFreeBatchNorms(model: tf.LayersModel): tf.layers.Layer[] {
  return model.layers.filter((l) => l.getClassName() === 'BatchNormalization' && l.getConfig().scale === false);
}

const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

export class StateDictMismatchError extends Error {
  constructor(
    readonly missing: string[],
    readonly unexpected: string[],
    readonly wrongShape: string[],
  ) {
    const list = (title: string, xs: string[]) =>
      xs.length ? `\n  ${title} (${xs.length}): ${xs.slice(0, 12).join(', ')}${xs.length > 12 ? ', …' : ''}` : '';
    super(
      `the checkpoint does not fit the model:` +
        list('missing keys', missing) +
        list('unexpected keys', unexpected) +
        list('shape mismatches', wrongShape),
    );
    this.name = 'StateDictMismatchError';
  }
}

/**
 * Loads an insightface state dict into a backbone built by this project. Every key must be used and every
 * weight filled; otherwise one StateDictMismatchError lists all missing, unexpected and mis-shaped keys.
 */
export function loadStateDict(model: tf.LayersModel, sd: Map<string, TorchTensor>): void {
  const slots = slotsOf(model);
  const used = new Set<string>();
  const missing: string[] = [];
  const wrongShape: string[] = [];
  const values: [tf.LayerVariable, Float32Array][] = [];
  const asFloat = (t: TorchTensor) => (t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>, Number));

  for (const s of slots) {
    const t = sd.get(s.torchKey);
    if (!t) {
      missing.push(s.torchKey);
      continue;
    }
    used.add(s.torchKey);
    const n = s.torchShape.reduce((a, b) => a * b, 1);
    // PReLU may hold one shared slope (num_parameters=1), broadcast here, or its slopes shaped [C,1,1].
    const isPrelu = s.layer.getClassName() === 'PReLU';
    const isSharedSlope = isPrelu && t.data.length === 1;
    if (!sameShape(t.shape, s.torchShape) && !isSharedSlope && !(isPrelu && t.data.length === n)) {
      wrongShape.push(`${s.torchKey} is [${t.shape}], the model needs [${s.torchShape}]`);
      continue;
    }
    const data = isSharedSlope ? new Float32Array(n).fill(asFloat(t)[0]!) : asFloat(t);
    values.push([s.variable, s.toTf(data, s.torchShape)]);
  }
  // Scale-free BNs: torch still stores gamma; fold gamma != 1 into the variance so the output is unchanged.
  const folds: [tf.layers.Layer, Float32Array][] = [];
  for (const bn of scaleFreeBatchNorms(model)) {
    const key = `${bn.name}.weight`;
    const t = sd.get(key);
    if (!t) {
      missing.push(key);
      continue;
    }
    used.add(key);
    const c = bn.weights[0]!.shape[0]!;
    if (t.data.length !== c) wrongShape.push(`${key} is [${t.shape}], the model needs [${c}]`);
    else folds.push([bn, asFloat(t)]);
  }
  for (const bn of model.layers.filter((l) => l.getClassName() === 'BatchNormalization')) used.add(`${bn.name}.num_batches_tracked`);
  const unexpected = [...sd.keys()].filter((k) => !used.has(k));
  if (missing.length || unexpected.length || wrongShape.length) throw new StateDictMismatchError(missing, unexpected, wrongShape);

  for (const [v, data] of values) v.write(tf.tensor(data, v.shape as number[]));
  for (const [bn, gamma] of folds) {
    if (gamma.every((g) => g === 1)) continue;
    if (gamma.some((g) => !(g > 0))) throw new Error(`${bn.name}.weight has non-positive values: cannot represent a frozen gamma`);
    const variance = bn.weights.find((w) => w.originalName.endsWith('moving_variance'))!;
    // gamma*(x-m)/sqrt(v+eps) == (x-m)/sqrt(v'+eps) with v' = (v+eps)/gamma^2 - eps.
    const v2 = Float32Array.from(variance.read().dataSync(), (vi, i) => (vi + BN_EPS) / (gamma[i]! * gamma[i]!) - BN_EPS);
    variance.write(tf.tensor(v2, variance.shape as number[]));
  }
}

/** The model's weights as an insightface state dict (what `torch.load` + `load_state_dict(strict=True)` takes). */
export function toStateDict(model: tf.LayersModel): Map<string, TorchTensorOut> {
  const out = new Map<string, TorchTensorOut>();
  const slots = slotsOf(model);
  const frozen = new Set(scaleFreeBatchNorms(model).map((l) => l.name));
  for (const layer of model.layers) {
    const own = slots.filter((s) => s.layer === layer);
    for (const s of own) {
      // torch orders BN entries weight, bias, running_mean, running_var, num_batches_tracked.
      if (frozen.has(layer.name) && s.torchKey.endsWith('.bias')) {
        out.set(`${layer.name}.weight`, { shape: [...s.torchShape], data: new Float32Array(s.torchShape[0]!).fill(1) });
      }
      const data = s.toTorch(s.variable.read().dataSync() as Float32Array);
      out.set(s.torchKey, { shape: [...s.torchShape], data });
    }
    if (layer.getClassName() === 'BatchNormalization') {
      out.set(`${layer.name}.num_batches_tracked`, { shape: [], data: BigInt64Array.of(0n) });
    }
  }
  return out;
}
