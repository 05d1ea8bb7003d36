// Builds an ONNX graph the way MXNet's exporter wrote the ONNX zoo's LResNet100E-IR (opset 8, IR 3):
// every initializer also listed as a graph input, node names that say nothing, BatchNormalization with
// `spatial=0` and [C] parameters (epsilon 2e-5), PRelu slopes [C,1,1], no conv biases, raw 0..255 input
// normalised by Sub 127.5 / Mul 0.0078125 inside the graph, Dropout before Flatten + Gemm, a
// BatchNormalization on the 2-D embedding, and a fixed batch of 1. The weights come from an insightface
// IResNet state dict, with each running variance lowered by 1e-5 so that eps 2e-5 computes exactly what
// the state dict computes with torch's 1e-5.
import type { TorchTensor } from '../../src/formats/torch.ts';
import { onnx } from '../../src/convert/onnx/reader.ts';
import type { onnx as O } from 'onnx-proto';

export interface MxnetStyleOptions {
  /** Write `spatial=0` on every BatchNormalization (the exporter's mistake; onnxruntime rejects it). */
  spatial0?: boolean;
  /** Normalisation inside the graph: Sub `mean`, Mul `scale` (default 127.5 and 0.0078125 = 1/128). */
  mean?: number;
  scale?: number;
}

export const MXNET_EPS = 2e-5;

export function mxnetStyleIResNet(sd: Map<string, TorchTensor>, opts: MxnetStyleOptions = {}): Uint8Array {
  const spatial0 = opts.spatial0 ?? true;
  const F = onnx.TensorProto.DataType.FLOAT;
  const inits: O.ITensorProto[] = [];
  const nodes: O.INodeProto[] = [];
  let counter = 0;
  const fresh = (p: string) => `${p}${counter++}`;
  const f32 = (t: TorchTensor) => Array.from(t.data as Float32Array);
  const init = (data: number[], dims: number[]): string => {
    const name = fresh('w');
    inits.push({ name, dims, dataType: F, floatData: data });
    return name;
  };
  const get = (k: string): TorchTensor => {
    const t = sd.get(k);
    if (!t) throw new Error(`state dict has no ${k}`);
    return t;
  };
  const node = (opType: string, input: string[], attrs: O.IAttributeProto[] = []): string => {
    const out = fresh('t');
    nodes.push({ name: fresh('n'), opType, input, output: [out], attribute: attrs });
    return out;
  };
  const ints = (name: string, v: number[]): O.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v });
  const int = (name: string, v: number): O.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INT, i: v });
  const float = (name: string, v: number): O.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f: v });

  const conv = (x: string, key: string, stride: number, pad: number): string => {
    const w = get(`${key}.weight`);
    return node('Conv', [x, init(f32(w), w.shape)], [ints('kernel_shape', w.shape.slice(2)), ints('strides', [stride, stride]), ints('pads', [pad, pad, pad, pad]), int('group', 1), ints('dilations', [1, 1])]);
  };
  const bn = (x: string, key: string): string => {
    const c = get(`${key}.running_mean`).shape[0]!;
    const gamma = sd.has(`${key}.weight`) ? f32(get(`${key}.weight`)) : new Array<number>(c).fill(1);
    const variance = f32(get(`${key}.running_var`)).map((v) => v + 1e-5 - MXNET_EPS);
    const attrs = [float('epsilon', MXNET_EPS), float('momentum', 0.9)];
    if (spatial0) attrs.push(int('spatial', 0));
    return node('BatchNormalization', [x, init(gamma, [c]), init(f32(get(`${key}.bias`)), [c]), init(f32(get(`${key}.running_mean`)), [c]), init(variance, [c])], attrs);
  };
  const prelu = (x: string, key: string): string => {
    const s = get(`${key}.weight`);
    return node('PRelu', [x, init(f32(s), [s.shape[0]!, 1, 1])]);
  };

  const layers = [1, 2, 3, 4].map((s) => new Set([...sd.keys()].filter((k) => k.startsWith(`layer${s}.`)).map((k) => k.split('.')[1])).size);
  let x = node('Sub', ['data', init([opts.mean ?? 127.5], [1])]);
  x = node('Mul', [x, init([opts.scale ?? 0.0078125], [1])]);
  x = prelu(bn(conv(x, 'conv1', 1, 1), 'bn1'), 'prelu');
  layers.forEach((n, s) => {
    for (let b = 0; b < n; b++) {
      const k = `layer${s + 1}.${b}`;
      let y = bn(x, `${k}.bn1`);
      y = prelu(bn(conv(y, `${k}.conv1`, 1, 1), `${k}.bn2`), `${k}.prelu`);
      y = bn(conv(y, `${k}.conv2`, b === 0 ? 2 : 1, 1), `${k}.bn3`);
      // MXNet writes the shortcut after the main branch.
      const sc = b === 0 ? bn(conv(x, `${k}.downsample.0`, 2, 0), `${k}.downsample.1`) : x;
      x = node('Add', [y, sc]);
    }
  });
  x = bn(x, 'bn2');
  x = node('Dropout', [x], [float('ratio', 0.4)]);
  x = node('Flatten', [x], [int('axis', 1)]);
  const fc = get('fc.weight');
  x = node('Gemm', [x, init(f32(fc), fc.shape), init(f32(get('fc.bias')), [fc.shape[0]!])], [float('alpha', 1), float('beta', 1), int('transA', 0), int('transB', 1)]);
  x = bn(x, 'features');
  const e = fc.shape[0]!;
  const side = Math.round(Math.sqrt(fc.shape[1]! / get('layer4.0.conv1.weight').shape[0]!) * 16);

  const vi = (name: string, dims: number[]): O.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: F, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
  });
  nodes[nodes.length - 1]!.output = ['fc1'];
  const model = onnx.ModelProto.create({
    irVersion: 3,
    producerName: 'mxnet-style test graph',
    opsetImport: [{ domain: '', version: 8 }],
    graph: {
      name: 'mxnet_converted_model',
      node: nodes,
      initializer: inits,
      // IR 3: the initializers are graph inputs too.
      input: [vi('data', [1, 3, side, side]), ...inits.map((t) => vi(t.name!, t.dims as number[]))],
      output: [vi('fc1', [1, e])],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

/** The same graph without `spatial` attributes: what onnxruntime runs (MXNet's per-channel semantics). */
export function withoutSpatial(bytes: Uint8Array): Uint8Array {
  const m = onnx.ModelProto.decode(bytes);
  for (const n of m.graph!.node!) n.attribute = (n.attribute ?? []).filter((a) => a.name !== 'spatial');
  return onnx.ModelProto.encode(m).finish();
}
