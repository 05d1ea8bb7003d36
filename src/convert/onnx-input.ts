// Keeps a model's input convention on ONNX export: a network converted from a graph that normalised its
// own raw 0..255 input gets that normalisation back in front (Sub mean, Mul 1/std, the model-zoo
// spelling insightface's tools recognise), and every export records the convention in metadata_props,
// so the exported model is used exactly like the original.
import { describeInput, isStandardInput, type InputConvention } from '../models/input-convention.ts';
import { onnx } from './onnx/reader.ts';

const uniform = (v: number[]) => v.every((x) => x === v[0]);

/** Rewrites exported ONNX bytes for `c`: normalisation nodes when it was inside the original graph, metadata always. */
export function applyInputConvention(bytes: Uint8Array, c: InputConvention): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  const graph = model.graph!;
  const input = graph.input![0]!;
  const name = input.name!;
  let inGraph = false;
  if (c.normalisationInGraph) {
    inGraph = true;
    const dims = input.type?.tensorType?.shape?.dim ?? [];
    const nchw = Number(dims[1]?.dimValue ?? 0) === 3;
    const perChannel = !(uniform(c.mean) && uniform(c.std));
    const shape = perChannel ? (nchw ? [1, 3, 1, 1] : [1, 1, 1, 3]) : [1];
    const values = (v: number[]) => (perChannel ? v : [v[0]!]);
    const inits = [
      { name: `${name}_mean`, dims: shape, dataType: onnx.TensorProto.DataType.FLOAT, floatData: values(c.mean) },
      { name: `${name}_scale`, dims: shape, dataType: onnx.TensorProto.DataType.FLOAT, floatData: values(c.std).map((s) => Math.fround(1 / s)) },
    ];
    const centred = `${name}_centred`;
    const normalised = `${name}_normalised`;
    for (const n of graph.node ?? []) n.input = (n.input ?? []).map((i) => (i === name ? normalised : i));
    graph.node = [
      onnx.NodeProto.create({ name: 'normalise_sub', opType: 'Sub', input: [name, inits[0]!.name], output: [centred] }),
      onnx.NodeProto.create({ name: 'normalise_mul', opType: 'Mul', input: [centred, inits[1]!.name], output: [normalised] }),
      ...(graph.node ?? []),
    ];
    graph.initializer = [...inits.map((t) => onnx.TensorProto.create(t)), ...(graph.initializer ?? [])];
  }
  const props = (model.metadataProps ?? []).filter((p) => p.key !== 'normalisation' && p.key !== 'arcface_input');
  const what = describeInput({ ...c, normalisationInGraph: inGraph });
  // The standard convention keeps the exporter's own wording.
  const standard = isStandardInput(c) ? (inGraph ? 'built in: raw RGB 0..255, NCHW' : '(x-127.5)/127.5, RGB, NCHW') : undefined;
  props.push(
    onnx.StringStringEntryProto.create({ key: 'normalisation', value: standard ?? what }),
    onnx.StringStringEntryProto.create({ key: 'arcface_input', value: JSON.stringify({ ...c, normalisationInGraph: inGraph }) }),
  );
  model.metadataProps = props;
  return onnx.ModelProto.encode(model).finish();
}
