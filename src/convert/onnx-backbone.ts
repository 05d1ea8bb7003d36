// Recognises an IResNet or MobileFaceNet in an ONNX graph by its structure alone (not by node names),
// whatever exported it: torch.onnx (BatchNorm folded into the convolutions, shape subgraphs), the
// insightface model zoo (normalisation inside), or MXNet at opset 8 (BatchNormalization `spatial=0`
// with [C] parameters, which MXNet computes per channel; PRelu slopes [C,1,1]; Sub/Mul input
// normalisation; Dropout; Flatten + Gemm; BatchNorm on the 2-D embedding; a fixed batch of 1). The
// result is the same network as src/models builds (so training takes the native, compiled path) with
// the graph's weights as an insightface state dict, plus the input convention the graph expects.
import type * as tf from '@tensorflow/tfjs';
import { ArcfaceError } from '../errors.ts';
import type { TorchTensor } from '../formats/torch.ts';
import { buildBackbone, resolveSpec, type BackboneSpec } from '../models/factory.ts';
import { STANDARD_INPUT, type InputConvention } from '../models/input-convention.ts';
import { IRESNET_LAYERS } from '../models/iresnet.ts';
import type { ConstTensor } from './onnx/const-tensor.ts';
import { floatData } from './onnx/const-tensor.ts';
import { nodeAttributes, readOnnxModel, tensorFromProto, valueInfoShape, type AttrValue } from './onnx/reader.ts';
import { loadStateDict } from './torch-mapping.ts';

/** The BatchNorm epsilon of the native networks (torch's default); other epsilons are folded into the variance. */
const NATIVE_EPS = 1e-5;

type Unit =
  | { kind: 'input' }
  | { kind: 'conv'; w: Float32Array; shape: number[]; b?: Float32Array; stride: number[]; pads: number[]; group: number; dil: number[] }
  | { kind: 'bn'; gamma: Float32Array; beta: Float32Array; mean: Float32Array; var: Float32Array; eps: number; folded: boolean }
  | { kind: 'affine'; scale: Float32Array; offset: Float32Array }
  | { kind: 'prelu'; slope: Float32Array }
  | { kind: 'add' }
  | { kind: 'flatten' }
  | { kind: 'fc'; w: Float32Array; out: number; in: number; b?: Float32Array };

interface GNode {
  id: number;
  unit: Unit;
  inputs: number[];
}

export interface RecognisedBackbone {
  spec: BackboneSpec;
  model: tf.LayersModel;
  input: InputConvention;
  /** BatchNorms that the exporter had folded into convolutions (restored as identity BNs). */
  foldedBatchNorms: number;
  /** Their layer names in the native model (see recalibrateBatchNorms in src/train/init.ts). */
  foldedLayers: string[];
  /** What was recognised, for messages: "IResNet layers [3,13,30,3] ...". */
  summary: string;
}

/** Why a graph is not an IResNet/MobileFaceNet (the caller falls back to the generic import). */
export class NotRecognisedError extends Error {
  override name = 'NotRecognisedError';
}

const fail = (why: string): never => {
  throw new NotRecognisedError(why);
};

// ---- ONNX -> a small DAG of units ------------------------------------------------------------------

class Graph {
  readonly nodes: GNode[] = [];
  private readonly consumersOf = new Map<number, number[]>();
  add(unit: Unit, inputs: number[]): number {
    const id = this.nodes.length;
    this.nodes.push({ id, unit, inputs });
    for (const i of inputs) this.consumersOf.set(i, [...(this.consumersOf.get(i) ?? []), id]);
    return id;
  }
  consumers(id: number): GNode[] {
    return (this.consumersOf.get(id) ?? []).map((i) => this.nodes[i]!);
  }
  node(id: number): GNode {
    return this.nodes[id]!;
  }
}

const attrInts = (a: Map<string, AttrValue>, k: string, def: number[]): number[] => {
  const v = a.get(k);
  return Array.isArray(v) ? (v as number[]) : def;
};
const attrNum = (a: Map<string, AttrValue>, k: string, def: number): number => {
  const v = a.get(k);
  return typeof v === 'number' ? v : def;
};

/** Per-channel values of a constant that broadcasts along the channel axis of NCHW (or [N, C]). */
function perChannel(c: ConstTensor, what: string): Float32Array {
  const d = floatData(c) ?? fail(`${what} is not a float constant`);
  const nonUnit = c.shape.filter((s) => s !== 1);
  if (d.length === 1 || nonUnit.length <= 1) return d;
  return fail(`${what} has shape [${c.shape}], not one value per channel`);
}

function parseGraph(pathOrBytes: string | Uint8Array, label?: string): { g: Graph; output: number; inputDims: (number | null)[]; file: string } {
  const { model, file } = readOnnxModel(pathOrBytes, label);
  const graph = model.graph!;
  const consts = new Map<string, ConstTensor>();
  for (const init of graph.initializer ?? []) consts.set(init.name ?? '', tensorFromProto(init, file));
  const dyn = new Map<string, number>();
  const g = new Graph();
  const realInputs = (graph.input ?? []).filter((i) => !consts.has(i.name ?? ''));
  if (realInputs.length !== 1) fail(`the graph has ${realInputs.length} inputs; a face model has one`);
  const inputDims = valueInfoShape(realInputs[0]!) ?? [];
  if (inputDims.length !== 4 || (inputDims[1] !== null && inputDims[1] !== 3)) fail(`the input is [${inputDims}], not [N,3,H,W]`);
  dyn.set(realInputs[0]!.name ?? '', g.add({ kind: 'input' }, []));

  for (const node of graph.node ?? []) {
    const op = node.opType ?? '';
    const ins = (node.input ?? []).map((n) => n ?? '');
    const outs = node.output ?? [];
    const attrs = nodeAttributes(node, file);
    if (op === 'Constant') {
      const t = attrs.get('value');
      if (t && typeof t === 'object' && !Array.isArray(t)) consts.set(outs[0] ?? '', t as ConstTensor);
      continue;
    }
    const dIns = ins.filter((n) => n && dyn.has(n));
    // Shape arithmetic and other constant work: its values only ever reach Reshape's shape input.
    if (dIns.length === 0 || op === 'Shape') continue;
    const x = dyn.get(ins[0]!);
    const c = (i: number): ConstTensor | undefined => (ins[i] ? consts.get(ins[i]!) : undefined);
    const set = (id: number) => dyn.set(outs[0] ?? '', id);
    switch (op) {
      case 'Identity':
      case 'Dropout':
        if (x === undefined) fail(`${op} of a constant`);
        set(x!);
        break;
      case 'Conv': {
        const w = c(1) ?? fail('Conv with a computed weight');
        if (w.shape.length !== 4 || x === undefined) fail('Conv is not 2-D');
        const autoPad = attrs.get('auto_pad');
        if (autoPad && autoPad !== 'NOTSET' && autoPad !== 'VALID') fail(`Conv auto_pad ${String(autoPad)}`);
        const b = c(2);
        set(
          g.add(
            {
              kind: 'conv',
              w: floatData(w)!,
              shape: w.shape,
              b: b ? floatData(b) : undefined,
              stride: attrInts(attrs, 'strides', [1, 1]),
              pads: attrInts(attrs, 'pads', [0, 0, 0, 0]),
              group: attrNum(attrs, 'group', 1),
              dil: attrInts(attrs, 'dilations', [1, 1]),
            },
            [x!],
          ),
        );
        break;
      }
      case 'BatchNormalization': {
        if (x === undefined) fail('BatchNormalization of a constant');
        const p = [1, 2, 3, 4].map((i) => c(i) ?? fail('BatchNormalization with computed parameters'));
        // spatial=0 with [C] parameters is the MXNet exporter's mistake: MXNet normalises per channel.
        const [gamma, beta, mean, variance] = p.map((t, i) => perChannel(t, ['scale', 'B', 'mean', 'var'][i]!));
        set(g.add({ kind: 'bn', gamma: gamma!, beta: beta!, mean: mean!, var: variance!, eps: attrNum(attrs, 'epsilon', 1e-5), folded: false }, [x!]));
        break;
      }
      case 'PRelu': {
        const s = c(1) ?? fail('PRelu with a computed slope');
        if (x === undefined) fail('PRelu of a constant');
        set(g.add({ kind: 'prelu', slope: perChannel(s, 'PRelu slope') }, [x!]));
        break;
      }
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div': {
        if (dIns.length === 2) {
          if (op !== 'Add') fail(`${op} of two computed tensors`);
          set(g.add({ kind: 'add' }, [dyn.get(ins[0]!)!, dyn.get(ins[1]!)!]));
          break;
        }
        const first = x !== undefined;
        const k = c(first ? 1 : 0) ?? fail(`${op} with an unknown operand`);
        const v = perChannel(k, `${op} operand`);
        const ones = new Float32Array(v.length).fill(1);
        const zeros = new Float32Array(v.length);
        let unit: Unit;
        if (op === 'Add') unit = { kind: 'affine', scale: ones, offset: v };
        else if (op === 'Sub') unit = first ? { kind: 'affine', scale: ones, offset: v.map((t) => -t) } : { kind: 'affine', scale: ones.map(() => -1), offset: v };
        else if (op === 'Mul') unit = { kind: 'affine', scale: v, offset: zeros };
        else if (first) unit = { kind: 'affine', scale: v.map((t) => 1 / t), offset: zeros };
        else unit = fail('division by a computed tensor');
        set(g.add(unit, [dyn.get(dIns[0]!)!]));
        break;
      }
      case 'Flatten':
      case 'Reshape':
        if (op === 'Flatten' && attrNum(attrs, 'axis', 1) !== 1) fail('Flatten with axis != 1');
        if (op === 'Reshape') {
          const shape = c(1);
          if (shape && shape.shape[0] !== 2) fail(`Reshape to rank ${shape.shape[0]}`);
        }
        if (x === undefined) fail(`${op} of a constant`);
        set(g.add({ kind: 'flatten' }, [x!]));
        break;
      case 'Gemm':
      case 'MatMul': {
        const bt = c(1) ?? fail(`${op} with a computed weight`);
        if (x === undefined || bt.shape.length !== 2) fail(`${op} shape`);
        if (attrNum(attrs, 'transA', 0) !== 0) fail('Gemm with transA');
        const alpha = attrNum(attrs, 'alpha', 1);
        const beta = attrNum(attrs, 'beta', 1);
        const d = floatData(bt)!;
        const trans = op === 'Gemm' && attrNum(attrs, 'transB', 0) === 1;
        const [r, q] = bt.shape as [number, number];
        const out = trans ? r : q;
        const inn = trans ? q : r;
        const w = new Float32Array(out * inn); // torch layout [out, in]
        for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) w[o * inn + i] = alpha * d[trans ? o * inn + i : i * out + o]!;
        let b: Float32Array | undefined;
        const bc = op === 'Gemm' ? c(2) : undefined;
        if (bc) {
          const bd = perChannel(bc, 'Gemm bias');
          b = new Float32Array(out).map((_, o) => beta * bd[bd.length === 1 ? 0 : o]!);
        }
        set(g.add({ kind: 'fc', w, out, in: inn, b }, [x!]));
        break;
      }
      default:
        fail(`operator ${op} (node "${node.name ?? ''}") is not part of an IResNet/MobileFaceNet`);
    }
  }
  const outName = graph.output?.[0]?.name ?? '';
  const output = dyn.get(outName) ?? fail('the graph output does not depend on the input');
  if ((graph.output ?? []).length !== 1) fail('more than one output');
  return { g, output: output!, inputDims, file };
}

// ---- structure walkers -----------------------------------------------------------------------------

interface ConvBn {
  conv: Extract<Unit, { kind: 'conv' }>;
  bn: Extract<Unit, { kind: 'bn' }>;
  out: number;
}

class Walker {
  readonly sd = new Map<string, TorchTensor>();
  readonly visited = new Set<number>();
  folded = 0;
  /** Native BatchNorm layers (same names as the state-dict keys) that stand for folded ones. */
  readonly foldedLayers: string[] = [];
  constructor(readonly g: Graph) {}

  private one(id: number): GNode | undefined {
    const cs = this.g.consumers(id);
    return cs.length === 1 ? cs[0] : undefined;
  }

  /** The single consumer of `id` if it is of `kind`. */
  next<K extends Unit['kind']>(id: number, kind: K): (GNode & { unit: Extract<Unit, { kind: K }> }) | undefined {
    const n = this.one(id);
    return n && n.unit.kind === kind ? (n as GNode & { unit: Extract<Unit, { kind: K }> }) : undefined;
  }

  consumers(id: number): GNode[] {
    return this.g.consumers(id);
  }

  visit(n: GNode): void {
    if (this.visited.has(n.id)) fail('a layer is used twice');
    this.visited.add(n.id);
  }

  /** A BN (or per-channel affine, or nothing: folded into the conv bias) after a conv or fc. */
  private bnAfter(id: number, channels: number, bias: Float32Array | undefined): { bn: Extract<Unit, { kind: 'bn' }>; out: number } {
    const n = this.one(id);
    if (n && (n.unit.kind === 'bn' || n.unit.kind === 'affine')) {
      this.visit(n);
      let bn: Extract<Unit, { kind: 'bn' }>;
      if (n.unit.kind === 'affine') {
        let { scale, offset } = n.unit;
        let out = n.id;
        // Mul then Add (a BN an optimiser split): merge consecutive affine nodes.
        for (let m = this.one(out); m && m.unit.kind === 'affine'; m = this.one(out)) {
          this.visit(m);
          const s2 = m.unit.scale;
          const o2 = m.unit.offset;
          const ch = Math.max(scale.length, s2.length);
          const pick = (v: Float32Array, i: number) => v[v.length === 1 ? 0 : i]!;
          const ns = new Float32Array(ch).map((_, i) => pick(scale, i) * pick(s2, i));
          const no = new Float32Array(ch).map((_, i) => pick(offset, i) * pick(s2, i) + pick(o2, i));
          scale = ns;
          offset = no;
          out = m.id;
        }
        const full = (v: Float32Array) => (v.length === channels ? v : new Float32Array(channels).fill(v[0]!));
        bn = { kind: 'bn', gamma: full(scale), beta: full(offset), mean: new Float32Array(channels), var: new Float32Array(channels).fill(1 - NATIVE_EPS), eps: NATIVE_EPS, folded: true };
        this.folded++;
        return { bn: withBias(bn, bias), out };
      }
      bn = n.unit;
      if (bn.gamma.length !== channels) fail(`BatchNorm has ${bn.gamma.length} channels, its input ${channels}`);
      return { bn: withBias(bn, bias), out: n.id };
    }
    this.folded++;
    const b = bias ?? new Float32Array(channels);
    return {
      bn: { kind: 'bn', gamma: new Float32Array(channels).fill(1), beta: b, mean: new Float32Array(channels), var: new Float32Array(channels).fill(1 - NATIVE_EPS), eps: NATIVE_EPS, folded: true },
      out: id,
    };
  }

  /** conv -> BN (explicit, or folded into the conv's bias). */
  convBn(x: number, check: { k?: number; stride?: number; dw?: boolean; group?: number; pad?: number; cout?: number }): ConvBn {
    const n = this.consumers(x).find((c) => c.unit.kind === 'conv' && !this.visited.has(c.id)) ?? fail('expected a convolution');
    const conv = n!.unit as Extract<Unit, { kind: 'conv' }>;
    const [cout, cinG, kh, kw] = conv.shape as [number, number, number, number];
    if (kh !== kw || conv.dil.some((d) => d !== 1) || conv.stride[0] !== conv.stride[1]) fail('non-square or dilated convolution');
    if (check.k !== undefined && kh !== check.k) fail(`expected a ${check.k}x${check.k} convolution, got ${kh}x${kw}`);
    if (check.stride !== undefined && conv.stride[0] !== check.stride) fail(`expected stride ${check.stride}`);
    if (check.dw && !(cinG === 1 && conv.group === cout)) fail('expected a depthwise convolution');
    if (check.group !== undefined && conv.group !== check.group) fail(`expected ${check.group} groups, got ${conv.group}`);
    if (check.cout !== undefined && cout !== check.cout) fail(`expected ${check.cout} output channels, got ${cout}`);
    const pad = check.pad ?? (kh - 1) / 2;
    if (conv.pads.some((p) => p !== pad)) fail(`expected padding ${pad}, got [${conv.pads}]`);
    this.visit(n!);
    const { bn, out } = this.bnAfter(n!.id, cout, conv.b);
    return { conv, bn, out };
  }

  prelu(x: number): number {
    const n = this.next(x, 'prelu') ?? fail('expected a PReLU');
    this.visit(n!);
    return n!.id;
  }

  putConv(key: string, c: ConvBn['conv']): void {
    this.sd.set(`${key}.weight`, { dtype: 'float32', shape: [...c.shape], data: c.w });
  }

  putBn(key: string, bn: ConvBn['bn']): void {
    const c = bn.gamma.length;
    if (bn.folded) this.foldedLayers.push(key);
    // Another epsilon is folded into the variance: (x - m) / sqrt(v + eps) == (x - m) / sqrt(v' + 1e-5).
    const v = bn.eps === NATIVE_EPS ? bn.var : bn.var.map((x) => x + bn.eps - NATIVE_EPS);
    const put = (k: string, d: Float32Array) => this.sd.set(`${key}.${k}`, { dtype: 'float32', shape: [c], data: d });
    put('weight', bn.gamma);
    put('bias', bn.beta);
    put('running_mean', bn.mean);
    put('running_var', v);
  }

  putPrelu(key: string, id: number): void {
    const s = (this.g.node(id).unit as Extract<Unit, { kind: 'prelu' }>).slope;
    this.sd.set(`${key}.weight`, { dtype: 'float32', shape: [s.length], data: s });
  }

  putConvBn(convKey: string, bnKey: string, u: ConvBn): void {
    this.putConv(convKey, u.conv);
    this.putBn(bnKey, u.bn);
  }
}

/** A conv bias in front of a BN moves into its running mean: BN(Wx + b) with m' = m - b. */
function withBias(bn: Extract<Unit, { kind: 'bn' }>, bias: Float32Array | undefined): Extract<Unit, { kind: 'bn' }> {
  if (!bias) return bn;
  return { ...bn, mean: bn.mean.map((m, i) => m - bias[i]!) };
}

/** Leading per-channel affine nodes on the input: the normalisation inside the graph. */
function inputNormalisation(w: Walker, input: number): { x: number; convention: InputConvention } {
  let x = input;
  let scale = Float32Array.of(1);
  let offset = Float32Array.of(0);
  let steps = 0;
  for (let n = w.next(x, 'affine'); n; n = w.next(x, 'affine')) {
    w.visit(n);
    const ch = Math.max(scale.length, n.unit.scale.length, n.unit.offset.length);
    const pick = (v: Float32Array, i: number) => v[v.length === 1 ? 0 : i]!;
    const ns = new Float32Array(ch).map((_, i) => pick(scale, i) * pick(n.unit.scale, i));
    const no = new Float32Array(ch).map((_, i) => pick(offset, i) * pick(n.unit.scale, i) + pick(n.unit.offset, i));
    scale = ns;
    offset = no;
    x = n.id;
    steps++;
  }
  if (!steps) return { x, convention: STANDARD_INPUT };
  if (scale.length !== 1 && scale.length !== 3) fail('the input normalisation is not per channel');
  const three = (v: Float32Array) => [0, 1, 2].map((i) => v[v.length === 1 ? 0 : i]!);
  const s = three(scale);
  const o = three(offset);
  const mean = s.map((a, i) => Math.fround(-o[i]! / a));
  const std = s.map((a) => Math.fround(1 / a));
  // Caffe-style BGR means ascend (B 104, G 117, R 124); RGB ImageNet means descend.
  const order = mean[0]! < mean[2]! - 5 ? 'BGR' : 'RGB';
  return { x, convention: { order, mean, std, normalisationInGraph: true } };
}

function walkIResNet(w: Walker, x0: number): { spec: Omit<BackboneSpec, 'inputSize'> & { fcIn: number }; out: number } {
  const stem = w.convBn(x0, { k: 3, stride: 1, pad: 1 });
  if (stem.conv.shape[1] !== 3) fail('the first convolution does not take 3 channels');
  w.putConvBn('conv1', 'bn1', stem);
  let x = w.prelu(stem.out);
  w.putPrelu('prelu', x);
  const layers: number[] = [];
  const widths: number[] = [];
  let block = 0;
  for (;;) {
    const cs = w.consumers(x);
    const bnNode = cs.find((c) => c.unit.kind === 'bn');
    // The head: BN -> (dropout) -> flatten -> fc. A block: BN -> conv, beside a shortcut.
    if (cs.length === 1 && bnNode && w.consumers(bnNode.id).every((c) => c.unit.kind !== 'conv')) break;
    if (cs.length !== 2 || !bnNode) fail('expected an IResNet block (BN -> conv beside a shortcut)');
    const other = cs.find((c) => c !== bnNode)!;
    w.visit(bnNode!);
    const bn1 = bnNode!.unit as ConvBn['bn'];
    const c1 = w.convBn(bnNode!.id, { k: 3, stride: 1, pad: 1 });
    const planes = c1.conv.shape[0]!;
    const p = w.prelu(c1.out);
    const c2 = w.convBn(p, { k: 3, pad: 1, cout: planes });
    const stride = c2.conv.stride[0]!;
    let sc = x;
    let down: ConvBn | undefined;
    if (other.unit.kind === 'conv') {
      down = w.convBn(x, { k: 1, stride, pad: 0, cout: planes });
      sc = down.out;
    } else if (stride !== 1) fail('a strided block without a projection shortcut');
    const add = w.consumers(c2.out).find((c) => c.unit.kind === 'add') ?? fail('expected the residual Add');
    if (![c2.out, sc].every((v) => add!.inputs.includes(v))) fail('the residual Add does not join the block');
    w.visit(add!);
    if (down) {
      if (stride !== 2) fail('a projection block without stride 2');
      layers.push(0);
      widths.push(planes);
      block = 0;
    }
    if (!layers.length) fail('the first block has no projection shortcut');
    const s = layers.length;
    const key = `layer${s}.${block}`;
    w.putBn(`${key}.bn1`, { ...bn1, folded: false });
    w.putConvBn(`${key}.conv1`, `${key}.bn2`, c1);
    w.putPrelu(`${key}.prelu`, p);
    w.putConvBn(`${key}.conv2`, `${key}.bn3`, c2);
    if (down) w.putConvBn(`${key}.downsample.0`, `${key}.downsample.1`, down);
    layers[s - 1]!++;
    block++;
    x = add!.id;
  }
  if (layers.length !== 4) fail(`${layers.length} stages, the native IResNet has 4`);
  const bn2 = w.consumers(x)[0]!;
  w.visit(bn2);
  w.putBn('bn2', bn2.unit as ConvBn['bn']);
  const flat = w.next(bn2.id, 'flatten') ?? fail('expected Flatten after the last BatchNorm');
  w.visit(flat!);
  const fc = w.next(flat!.id, 'fc') ?? fail('expected the fc layer');
  w.visit(fc!);
  const u = fc!.unit;
  w.sd.set('fc.weight', { dtype: 'float32', shape: [u.out, u.in], data: u.w });
  w.sd.set('fc.bias', { dtype: 'float32', shape: [u.out], data: u.b ?? new Float32Array(u.out) });
  const feat = w.next(fc!.id, 'bn');
  let out = fc!.id;
  if (feat) {
    w.visit(feat);
    let f = feat.unit;
    // The native `features` BN has no gamma (insightface freezes it at 1): any other gamma goes into
    // the fc rows, which is exact: g (Wx + b - m) / s + beta == ((gW)x + gb - gm) / s + beta.
    if (f.gamma.some((g) => g !== 1)) {
      const g = f.gamma;
      const wd = u.w.map((v, i) => v * g[Math.floor(i / u.in)]!);
      w.sd.set('fc.weight', { dtype: 'float32', shape: [u.out, u.in], data: wd });
      w.sd.set('fc.bias', { dtype: 'float32', shape: [u.out], data: (u.b ?? new Float32Array(u.out)).map((b, o) => b * g[o]!) });
      f = { ...f, mean: f.mean.map((m, o) => m * g[o]!), gamma: new Float32Array(u.out).fill(1) };
    }
    w.putBn('features', f);
    out = feat.id;
  } else {
    w.folded++;
    w.putBn('features', { kind: 'bn', gamma: new Float32Array(u.out).fill(1), beta: new Float32Array(u.out), mean: new Float32Array(u.out), var: new Float32Array(u.out).fill(1 - NATIVE_EPS), eps: NATIVE_EPS, folded: true });
  }
  const named = Object.entries(IRESNET_LAYERS).find(([, l]) => l.every((n, i) => n === layers[i]));
  const standard = widths.every((wd, i) => wd === 64 << i);
  return { spec: { network: named && standard ? named[0] : 'iresnet', embeddingSize: u.out, layers, widths, fcIn: u.in }, out };
}

interface DwBlock {
  key?: string;
  c1: ConvBn;
  p1: number;
  c2: ConvBn;
  p2: number;
  c3: ConvBn;
  residual: boolean;
  stride: number;
  out: number;
}

/** MobileFaceNet's DepthWise: 1x1 expand + PReLU, 3x3 depthwise + PReLU, 1x1 project (+ residual). */
function dwBlock(w: Walker, x: number): DwBlock | undefined {
  const first = w.consumers(x).find((c) => c.unit.kind === 'conv');
  if (!first) return undefined;
  const cu = first.unit as ConvBn['conv'];
  if (cu.shape[2] !== 1 || cu.group !== 1) return undefined;
  // The expand conv is followed by PReLU and a padded depthwise conv; conv_sep by PReLU and the unpadded GDC.
  let probe = w.consumers(first.id)[0];
  while (probe && (probe.unit.kind === 'bn' || probe.unit.kind === 'affine')) probe = w.consumers(probe.id)[0];
  const dwConv = probe?.unit.kind === 'prelu' ? w.consumers(probe.id)[0] : undefined;
  if (!dwConv || dwConv.unit.kind !== 'conv' || dwConv.unit.shape[2] !== 3 || dwConv.unit.pads[0] !== 1) return undefined;
  const c1 = w.convBn(x, { k: 1, pad: 0, stride: 1 });
  const p1 = w.prelu(c1.out);
  const c2 = w.convBn(p1, { k: 3, pad: 1, dw: true });
  const p2 = w.prelu(c2.out);
  const c3 = w.convBn(p2, { k: 1, pad: 0, stride: 1 });
  const stride = c2.conv.stride[0]!;
  const add = w.consumers(c3.out).find((c) => c.unit.kind === 'add' && c.inputs.includes(x));
  if (add) {
    w.visit(add);
    return { c1, p1, c2, p2, c3, residual: true, stride, out: add.id };
  }
  return { c1, p1, c2, p2, c3, residual: false, stride, out: c3.out };
}

function putDw(w: Walker, key: string, b: DwBlock): void {
  w.putConvBn(`${key}.layers.0.layers.0`, `${key}.layers.0.layers.1`, b.c1);
  w.putPrelu(`${key}.layers.0.layers.2`, b.p1);
  w.putConvBn(`${key}.layers.1.layers.0`, `${key}.layers.1.layers.1`, b.c2);
  w.putPrelu(`${key}.layers.1.layers.2`, b.p2);
  w.putConvBn(`${key}.layers.2.layers.0`, `${key}.layers.2.layers.1`, b.c3);
}

function walkMobileFaceNet(w: Walker, x0: number): { spec: Omit<BackboneSpec, 'inputSize'> & { gdc: number }; out: number } {
  const l0 = w.convBn(x0, { k: 3, stride: 2, pad: 1 });
  if (l0.conv.shape[1] !== 3) fail('the first convolution does not take 3 channels');
  const c0 = l0.conv.shape[0]!;
  if (c0 % 64 !== 0) fail(`the stem has ${c0} channels, not a multiple of 64`);
  const scale = c0 / 64;
  w.putConvBn('layers.0.layers.0', 'layers.0.layers.1', l0);
  let x = w.prelu(l0.out);
  w.putPrelu('layers.0.layers.2', x);
  const blocks: number[] = [];
  const firstConv = w.consumers(x).find((c) => c.unit.kind === 'conv');
  if (firstConv && (firstConv.unit as ConvBn['conv']).shape[2] === 3) {
    const l1 = w.convBn(x, { k: 3, stride: 1, pad: 1, group: 64, cout: c0 });
    w.putConvBn('layers.1.layers.0', 'layers.1.layers.1', l1);
    x = w.prelu(l1.out);
    w.putPrelu('layers.1.layers.2', x);
    blocks.push(1);
  }
  const seq: DwBlock[] = [];
  for (let b = dwBlock(w, x); b; b = dwBlock(w, x)) {
    seq.push(b);
    x = b.out;
  }
  // Group: [residual stack for layers.1 when blocks[0] > 1], then (down, residual stack) x 3.
  let i = 0;
  const stack = (key: string): number => {
    let n = 0;
    while (i < seq.length && seq[i]!.residual) {
      putDw(w, `${key}.layers.${n}`, seq[i]!);
      n++;
      i++;
    }
    return n;
  };
  if (!blocks.length) {
    const n = stack('layers.1');
    if (n < 2) fail('MobileFaceNet layers.1 is neither the grouped conv nor a residual stack of 2 or more');
    blocks.push(n);
  }
  const expand = [128, 256, 512];
  for (let s = 0; s < 3; s++) {
    const d = seq[i] ?? fail('MobileFaceNet: too few downsampling blocks');
    if (d!.residual || d!.stride !== 2) fail('MobileFaceNet: expected a stride-2 block');
    if (d!.c1.conv.shape[0] !== expand[s]) fail(`MobileFaceNet: expansion ${d!.c1.conv.shape[0]} where the native network has ${expand[s]}`);
    putDw(w, `layers.${2 + 2 * s}`, d!);
    i++;
    blocks.push(stack(`layers.${3 + 2 * s}`));
  }
  if (i !== seq.length) fail('MobileFaceNet: unexpected blocks');
  const sep = w.convBn(x, { k: 1, stride: 1, pad: 0 });
  w.putConvBn('conv_sep.layers.0', 'conv_sep.layers.1', sep);
  x = w.prelu(sep.out);
  w.putPrelu('conv_sep.layers.2', x);
  const gdc = w.convBn(x, { dw: true, pad: 0, stride: 1 });
  w.putConvBn('features.layers.0.layers.0', 'features.layers.0.layers.1', gdc);
  x = gdc.out;
  // The embedding layer: Flatten + Gemm/MatMul, or a 1x1 convolution on the 1x1 map, then Flatten.
  let fcW: Float32Array;
  let out: number;
  let inn: number;
  let bias: Float32Array | undefined;
  const flat = w.next(x, 'flatten');
  if (flat) {
    w.visit(flat);
    const fc = w.next(flat.id, 'fc') ?? fail('expected the embedding layer');
    w.visit(fc!);
    ({ w: fcW, out, in: inn, b: bias } = fc!.unit);
    x = fc!.id;
  } else {
    const conv = w.consumers(x).find((c) => c.unit.kind === 'conv') ?? fail('expected the embedding layer');
    const cu = conv!.unit as ConvBn['conv'];
    if (cu.shape[2] !== 1 || cu.shape[3] !== 1 || cu.group !== 1 || cu.pads.some((p) => p)) fail('the embedding conv is not 1x1');
    w.visit(conv!);
    fcW = cu.w;
    [out, inn] = cu.shape as [number, number];
    bias = cu.b;
    x = conv!.id;
    // A BN on the 1x1 map before the flatten is the same per-channel BN.
    const bnBefore = w.next(x, 'bn');
    let bnUnit: ConvBn['bn'] | undefined;
    if (bnBefore) {
      w.visit(bnBefore);
      bnUnit = bnBefore.unit;
      x = bnBefore.id;
    }
    const f2 = w.next(x, 'flatten') ?? fail('expected Flatten after the embedding conv');
    w.visit(f2!);
    x = f2!.id;
    if (bnUnit) {
      w.sd.set('features.layers.2.weight', { dtype: 'float32', shape: [out, inn], data: fcW });
      w.putBn('features.layers.3', withBias(bnUnit, bias));
      return { spec: { network: 'mbf', embeddingSize: out, blocks, scale, gdc: gdc.conv.shape[2]! }, out: x };
    }
  }
  w.sd.set('features.layers.2.weight', { dtype: 'float32', shape: [out, inn], data: fcW });
  const bn = w.next(x, 'bn');
  if (bn) {
    w.visit(bn);
    w.putBn('features.layers.3', withBias(bn.unit, bias));
    x = bn.id;
  } else {
    w.folded++;
    w.putBn('features.layers.3', { kind: 'bn', gamma: new Float32Array(out).fill(1), beta: bias ?? new Float32Array(out), mean: new Float32Array(out), var: new Float32Array(out).fill(1 - NATIVE_EPS), eps: NATIVE_EPS, folded: true });
  }
  const large = scale === 4 && blocks.join() === '2,8,12,4';
  return { spec: { network: large ? 'mbf_large' : 'mbf', embeddingSize: out, blocks, scale, gdc: gdc.conv.shape[2]! }, out: x };
}

/**
 * Recognises the graph as an IResNet or MobileFaceNet and builds the native network with its weights.
 * Throws NotRecognisedError (with the reason) for anything else; other errors are real failures.
 */
export function recogniseOnnxBackbone(pathOrBytes: string | Uint8Array, opts: { label?: string; order?: 'RGB' | 'BGR' } = {}): RecognisedBackbone {
  const { g, output, inputDims } = parseGraph(pathOrBytes, opts.label);
  const attempts: string[] = [];
  for (const family of ['iresnet', 'mbf'] as const) {
    const w = new Walker(g);
    try {
      w.visited.add(0);
      const { x, convention } = inputNormalisation(w, 0);
      let spec: BackboneSpec;
      let out: number;
      const [, , h, wd] = inputDims;
      if (h !== null && wd !== null && h !== wd) fail(`the input is ${h}x${wd}, not square`);
      if (family === 'iresnet') {
        const r = walkIResNet(w, x);
        const side = h ?? Math.sqrt(r.spec.fcIn / r.spec.widths![3]!) * 16;
        const { fcIn, ...rest } = r.spec;
        void fcIn;
        spec = resolveSpec({ ...rest, inputSize: side! });
        out = r.out;
      } else {
        const r = walkMobileFaceNet(w, x);
        const { gdc, ...rest } = r.spec;
        spec = resolveSpec({ ...rest, inputSize: h ?? gdc * 16 });
        out = r.out;
      }
      if (out !== output) fail('the network does not end where the graph output is');
      const unused = g.nodes.filter((n) => !w.visited.has(n.id));
      if (unused.length) fail(`${unused.length} operations outside the ${family} structure (first: ${unused[0]!.unit.kind})`);
      if (!Number.isInteger(spec.inputSize) || spec.inputSize % 16 !== 0) fail(`input size ${spec.inputSize} is not a multiple of 16`);
      const model = buildBackbone(spec);
      try {
        loadStateDict(model, w.sd);
      } catch (e) {
        model.dispose();
        fail(`weights do not fit the native ${spec.network}: ${(e as Error).message}`);
      }
      const input = opts.order ? { ...convention, order: opts.order } : convention;
      const what = spec.layers ? `IResNet layers [${spec.layers}] widths [${spec.widths}]` : `MobileFaceNet blocks [${spec.blocks}] scale ${spec.scale}`;
      return { spec, model, input, foldedBatchNorms: w.foldedLayers.length, foldedLayers: w.foldedLayers, summary: `${what}, ${spec.embeddingSize}-d, ${spec.inputSize}x${spec.inputSize}` };
    } catch (e) {
      if (!(e instanceof NotRecognisedError)) throw e;
      attempts.push(`${family}: ${e.message}`);
    }
  }
  throw new NotRecognisedError(attempts.join('; '));
}

/**
 * The recognised backbone, or why not. A file that is not ONNX throws the reader's ArcfaceError; any other
 * surprise in an odd graph is a reason, so the caller can still import it generically.
 */
export function tryRecogniseOnnxBackbone(pathOrBytes: string | Uint8Array, opts: { label?: string; order?: 'RGB' | 'BGR' } = {}): RecognisedBackbone | NotRecognisedError {
  try {
    return recogniseOnnxBackbone(pathOrBytes, opts);
  } catch (e) {
    if (e instanceof NotRecognisedError) return e;
    if (e instanceof ArcfaceError) throw e;
    return new NotRecognisedError(`unexpected structure (${(e as Error).message})`);
  }
}

