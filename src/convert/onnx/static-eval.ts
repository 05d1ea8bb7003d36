// Evaluates nodes whose inputs are all constants at conversion time: the shape arithmetic that
// torch.onnx.export writes around Reshape, Identity-shared initialisers, and Constant nodes.
import {
  type ConstTensor,
  type Dim,
  binaryConst,
  broadcastShapes,
  concatConst,
  floatTensor,
  gatherConst,
  intTensor,
  reshapeConst,
  sizeOf,
  sliceConst,
  staticInts,
  transposeConst,
  valuesOf,
} from './const-tensor.ts';
import type { ConvertContext } from './context.ts';

/** Ops this module can fold (when every input is constant). */
const sizeOfConst = (t: ConstTensor): number => t.shape.reduce<number>((p, d) => p * (d ?? 1), 1);

export const FOLDABLE_OPS = new Set([
  'Constant', 'Identity', 'Dropout', 'Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Concat', 'Cast',
  'Reshape', 'Flatten', 'Transpose', 'Add', 'Sub', 'Mul', 'Div', 'Slice', 'Neg',
]);

/** `axis` counted from 0 (a negative one from the end), checked against `rank`. */
export function normAxis(ctx: ConvertContext, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw ctx.error(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** ONNX Reshape target with 0 (copy) and -1 (infer) resolved against `inShape`. */
export function resolveReshape(ctx: ConvertContext, inShape: readonly Dim[], target: readonly Dim[], allowZero: boolean): Dim[] {
  const out = target.map((d, i) => (d === 0 && !allowZero ? (inShape[i] ?? null) : d));
  const minus = out.indexOf(-1);
  if (minus >= 0) {
    const known = out.filter((_, i) => i !== minus);
    if (inShape.every((d) => d !== null) && known.every((d) => d !== null)) {
      const rest = sizeOf(known as number[]);
      const total = sizeOf(inShape as number[]);
      if (rest === 0 || total % rest !== 0) throw ctx.error(`cannot reshape [${inShape}] to [${target}]`);
      out[minus] = total / rest;
    }
  }
  return out;
}

/** Shape `[d...]` of the symbolic or constant input, as an int tensor (null = run-time dim). */
export function shapeTensor(shape: readonly Dim[], start = 0, end?: number): ConstTensor {
  const r = shape.length;
  const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
  const dims = shape.slice(clamp(start), end === undefined ? r : clamp(end));
  return intTensor([dims.length], [...dims]);
}

/** Folds one node. `inputs[i]` is undefined for an omitted optional input. */
export function evalConstNode(ctx: ConvertContext, inputs: (ConstTensor | undefined)[]): ConstTensor[] {
  const op = ctx.opType;
  const x = inputs[0];
  const need = (t: ConstTensor | undefined, what: string): ConstTensor => {
    if (!t) throw ctx.error(`missing input ${what}`);
    return t;
  };
  const ints = (t: ConstTensor | undefined, what: string): number[] => {
    const v = staticInts(need(t, what));
    if (!v) throw ctx.error(`${what} must be known when converting (it depends on the batch size)`);
    return v;
  };
  switch (op) {
    case 'Constant': {
      const t = ctx.tensor('value');
      if (t) return [t];
      if (ctx.has('value_float')) return [floatTensor([], Float32Array.of(ctx.float('value_float', 0)))];
      if (ctx.has('value_floats')) {
        const v = ctx.ints('value_floats')!;
        return [floatTensor([v.length], Float32Array.from(v))];
      }
      if (ctx.has('value_int')) return [intTensor([], [ctx.int('value_int', 0)])];
      if (ctx.has('value_ints')) {
        const v = ctx.ints('value_ints')!;
        return [intTensor([v.length], v)];
      }
      throw ctx.error('Constant without a supported value attribute');
    }
    case 'Identity':
    case 'Dropout':
      return [need(x, 'input')];
    case 'Shape':
      return [shapeTensor(need(x, 'input').shape, ctx.int('start', 0), ctx.has('end') ? ctx.int('end', 0) : undefined)];
    case 'Gather': {
      const data = need(x, 'data');
      const out = gatherConst(data, need(inputs[1], 'indices'), normAxis(ctx, ctx.int('axis', 0), data.shape.length));
      if (!out) throw ctx.error('Gather indices out of range or not constant');
      return [out];
    }
    case 'Unsqueeze': {
      const data = need(x, 'data');
      const axesIn = inputs[1] ? ints(inputs[1], 'axes') : (ctx.ints('axes') ?? []);
      const rank = data.shape.length + axesIn.length;
      const axes = axesIn.map((a) => normAxis(ctx, a, rank));
      const shape: number[] = [];
      let k = 0;
      for (let i = 0; i < rank; i++) shape.push(axes.includes(i) ? 1 : data.shape[k++]);
      return [reshapeConst(data, shape)];
    }
    case 'Squeeze': {
      const data = need(x, 'data');
      const axesIn = inputs[1] ? ints(inputs[1], 'axes') : ctx.ints('axes');
      const axes = axesIn
        ? axesIn.map((a) => normAxis(ctx, a, data.shape.length))
        : data.shape.flatMap((d, i) => (d === 1 ? [i] : []));
      return [reshapeConst(data, data.shape.filter((_, i) => !axes.includes(i)))];
    }
    case 'Concat': {
      const ts = inputs.filter((t): t is ConstTensor => t !== undefined);
      const out = concatConst(ts, normAxis(ctx, ctx.int('axis', 0), ts[0].shape.length));
      if (!out) throw ctx.error('Concat inputs have mismatched shapes');
      return [out];
    }
    case 'Cast': {
      const data = need(x, 'input');
      const to = ctx.int('to', 1);
      const isFloat = to === 1 || to === 10 || to === 11 || to === 16;
      if (isFloat) {
        const v = valuesOf(data);
        if (v.some((d) => d === null)) throw ctx.error('cannot cast a run-time dimension to float when converting');
        return [floatTensor(data.shape, Float32Array.from(v as number[]))];
      }
      const v = valuesOf(data).map((d) => (d === null ? null : to === 9 ? Number(d !== 0) : Math.trunc(d)));
      return [intTensor(data.shape, v, to === 9 ? 'bool' : 'int')];
    }
    case 'Reshape': {
      const data = need(x, 'data');
      const out = resolveReshape(ctx, data.shape, valuesOf(need(inputs[1], 'shape')), ctx.int('allowzero', 0) === 1);
      if (out.some((d) => d === null) || sizeOf(out as number[]) !== sizeOf(data.shape)) {
        throw ctx.error(`cannot reshape a constant of shape [${data.shape}] to [${out}]`);
      }
      return [reshapeConst(data, out as number[])];
    }
    case 'Flatten': {
      const data = need(x, 'input');
      const axis = ctx.int('axis', 1);
      const a = axis < 0 ? axis + data.shape.length : axis;
      return [reshapeConst(data, [sizeOf(data.shape.slice(0, a)), sizeOf(data.shape.slice(a))])];
    }
    case 'Transpose': {
      const data = need(x, 'data');
      const perm = ctx.ints('perm') ?? data.shape.map((_, i) => data.shape.length - 1 - i);
      return [transposeConst(data, perm)];
    }
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div': {
      const a = need(x, 'A');
      const b = need(inputs[1], 'B');
      const isInt = a.dtype !== 'float' && b.dtype !== 'float';
      const f =
        op === 'Add' ? (p: number, q: number) => p + q
        : op === 'Sub' ? (p: number, q: number) => p - q
        : op === 'Mul' ? (p: number, q: number) => p * q
        : (p: number, q: number) => (isInt ? Math.trunc(p / q) : p / q);
      const shape = broadcastShapes(a.shape, b.shape);
      if (!shape) throw ctx.error(`shapes [${a.shape}] and [${b.shape}] do not broadcast`);
      // Folding is for shape arithmetic and small constants: a broadcast far bigger than both inputs is damage.
      const n = shape.reduce<number>((p, d) => p * (d ?? 1), 1);
      if (n > Math.max(sizeOfConst(a), sizeOfConst(b), 1 << 20)) throw ctx.error(`broadcasting [${a.shape}] with [${b.shape}] gives ${n} values`);
      const out = binaryConst(a, b, f)!;
      return [out];
    }
    case 'Neg': {
      const data = need(x, 'X');
      return [binaryConst(data, intTensor([], [-1]), (p, q) => p * q)!];
    }
    case 'Slice': {
      const data = need(x, 'data');
      let starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined;
      if (inputs.length > 1) {
        starts = ints(inputs[1], 'starts');
        ends = ints(inputs[2], 'ends');
        axes = inputs[3] ? ints(inputs[3], 'axes') : undefined;
        steps = inputs[4] ? ints(inputs[4], 'steps') : undefined;
      } else {
        starts = ctx.ints('starts', [])!;
        ends = ctx.ints('ends', [])!;
        axes = ctx.ints('axes');
      }
      // int64 "to the end" sentinels come through as huge numbers; clamping handles them.
      axes ??= starts.map((_, i) => i);
      return [sliceConst(data, starts, ends, axes, steps ?? axes.map(() => 1))];
    }
    default:
      throw ctx.error('cannot evaluate this operator on constant inputs');
  }
}
