// Constant tensors known at conversion time (initializers, Constant nodes, shape values) and the
// index arithmetic on them. Integer tensors may hold `null` for a dimension only known at run time
// (the batch), so `Shape -> Gather -> Unsqueeze -> Concat -> Reshape` chains evaluate statically.

/** A dimension: a number, or null where it is only known at run time. */
export type Dim = number | null;

export type ConstTensor =
  | { dtype: 'float'; shape: number[]; data: Float32Array }
  | { dtype: 'int' | 'bool'; shape: number[]; data: Dim[] };

export function floatTensor(shape: number[], data: Float32Array): ConstTensor {
  return { dtype: 'float', shape, data };
}

export function intTensor(shape: number[], data: Dim[], dtype: 'int' | 'bool' = 'int'): ConstTensor {
  return { dtype, shape, data };
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Values as a plain array (float data copied). */
export function valuesOf(t: ConstTensor): Dim[] {
  return t.dtype === 'float' ? Array.from(t.data) : t.data;
}

/** Float32 data of a tensor; symbolic entries are an error for the caller to report. */
export function floatData(t: ConstTensor): Float32Array | undefined {
  if (t.dtype === 'float') return t.data;
  if (t.data.some((v) => v === null)) return undefined;
  return Float32Array.from(t.data as number[]);
}

/** Integer values with no symbolic entries, or undefined. */
export function staticInts(t: ConstTensor): number[] | undefined {
  const v = valuesOf(t);
  return v.every((x) => x !== null) ? (v as number[]).map((x) => Math.trunc(x)) : undefined;
}

function make(like: ConstTensor, shape: number[], data: Dim[]): ConstTensor {
  return like.dtype === 'float'
    ? floatTensor(shape, Float32Array.from(data.map((v) => (v === null ? NaN : v))))
    : intTensor(shape, data, like.dtype);
}

/** Numpy-style transpose. */
export function transposeConst(t: ConstTensor, perm: readonly number[]): ConstTensor {
  const src = valuesOf(t);
  const outShape = perm.map((p) => t.shape[p]);
  const inStrides = stridesOf(t.shape);
  const out: Dim[] = new Array(src.length);
  const idx = new Array<number>(outShape.length).fill(0);
  for (let o = 0; o < src.length; o++) {
    let off = 0;
    for (let d = 0; d < idx.length; d++) off += idx[d] * inStrides[perm[d]];
    out[o] = src[off];
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d] < outShape[d]) break;
      idx[d] = 0;
    }
  }
  return make(t, outShape, out);
}

export function reshapeConst(t: ConstTensor, shape: number[]): ConstTensor {
  return t.dtype === 'float' ? floatTensor(shape, t.data) : intTensor(shape, t.data, t.dtype);
}

/** Right-aligns `shape` to `rank` with leading 1s (numpy broadcasting). */
export function alignShape(shape: readonly number[], rank: number): number[] {
  return [...new Array<number>(Math.max(0, rank - shape.length)).fill(1), ...shape];
}

export function broadcastShapes(a: readonly Dim[], b: readonly Dim[]): Dim[] | undefined {
  const r = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < r; i++) {
    const x = i - (r - a.length) >= 0 ? a[i - (r - a.length)] : 1;
    const y = i - (r - b.length) >= 0 ? b[i - (r - b.length)] : 1;
    if (x === 1) out.push(y);
    else if (y === 1 || x === y) out.push(x);
    else if (x === null || y === null) out.push(x ?? y);
    else return undefined;
  }
  return out;
}

/** Element-wise binary op with numpy broadcasting; null (run-time dims) propagates. */
export function binaryConst(a: ConstTensor, b: ConstTensor, f: (x: number, y: number) => number): ConstTensor | undefined {
  const shape = broadcastShapes(a.shape, b.shape) as number[] | undefined;
  if (!shape) return undefined;
  const av = valuesOf(a);
  const bv = valuesOf(b);
  const aS = stridesOf(alignShape(a.shape, shape.length)).map((s, i) => (alignShape(a.shape, shape.length)[i] === 1 ? 0 : s));
  const bS = stridesOf(alignShape(b.shape, shape.length)).map((s, i) => (alignShape(b.shape, shape.length)[i] === 1 ? 0 : s));
  const n = sizeOf(shape);
  const out: Dim[] = new Array(n);
  const idx = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < n; o++) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < shape.length; d++) {
      ia += idx[d] * aS[d];
      ib += idx[d] * bS[d];
    }
    const x = av[ia];
    const y = bv[ib];
    out[o] = x === null || y === null ? null : f(x, y);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  const like = a.dtype === 'float' || b.dtype === 'float' ? (a.dtype === 'float' ? a : b) : a;
  return make(like, shape, out);
}

/** numpy.take along `axis` with integer indices (negative allowed). */
export function gatherConst(t: ConstTensor, indices: ConstTensor, axis: number): ConstTensor | undefined {
  const idx = staticInts(indices);
  if (!idx) return undefined;
  const src = valuesOf(t);
  const n = t.shape[axis];
  const outer = sizeOf(t.shape.slice(0, axis));
  const inner = sizeOf(t.shape.slice(axis + 1));
  const out: Dim[] = [];
  for (let o = 0; o < outer; o++) {
    for (const raw of idx) {
      const i = raw < 0 ? raw + n : raw;
      if (i < 0 || i >= n) return undefined;
      for (let k = 0; k < inner; k++) out.push(src[(o * n + i) * inner + k]);
    }
  }
  return make(t, [...t.shape.slice(0, axis), ...indices.shape, ...t.shape.slice(axis + 1)], out);
}

export function concatConst(ts: ConstTensor[], axis: number): ConstTensor | undefined {
  const first = ts[0];
  const rank = first.shape.length;
  if (ts.some((t) => t.shape.length !== rank || t.shape.some((d, i) => i !== axis && d !== first.shape[i]))) return undefined;
  const outer = sizeOf(first.shape.slice(0, axis));
  const out: Dim[] = [];
  for (let o = 0; o < outer; o++) {
    for (const t of ts) {
      const chunk = sizeOf(t.shape.slice(axis));
      out.push(...valuesOf(t).slice(o * chunk, (o + 1) * chunk));
    }
  }
  const shape = [...first.shape];
  shape[axis] = ts.reduce((a, t) => a + t.shape[axis], 0);
  return make(ts.some((t) => t.dtype === 'float') ? ts.find((t) => t.dtype === 'float')! : first, shape, out);
}

/** ONNX Slice on one tensor (starts/ends/axes/steps already resolved to numbers). */
export function sliceConst(t: ConstTensor, starts: number[], ends: number[], axes: number[], steps: number[]): ConstTensor {
  const rank = t.shape.length;
  const lo = new Array<number>(rank).fill(0);
  const step = new Array<number>(rank).fill(1);
  const count = [...t.shape];
  axes.forEach((a0, k) => {
    const a = a0 < 0 ? a0 + rank : a0;
    const n = t.shape[a];
    const s = steps[k] ?? 1;
    const clamp = (v: number, min: number, max: number): number => Math.min(Math.max(v, min), max);
    let b = starts[k] < 0 ? starts[k] + n : starts[k];
    let e = ends[k] < 0 ? ends[k] + n : ends[k];
    if (s > 0) {
      b = clamp(b, 0, n);
      e = clamp(e, 0, n);
      count[a] = Math.max(0, Math.ceil((e - b) / s));
    } else {
      b = clamp(b, -1, n - 1);
      e = clamp(e, -1, n - 1);
      count[a] = Math.max(0, Math.ceil((e - b) / s));
    }
    lo[a] = b;
    step[a] = s;
  });
  const src = valuesOf(t);
  const strides = stridesOf(t.shape);
  const out: Dim[] = [];
  const idx = new Array<number>(rank).fill(0);
  const n = sizeOf(count);
  for (let o = 0; o < n; o++) {
    let off = 0;
    for (let d = 0; d < rank; d++) off += (lo[d] + idx[d] * step[d]) * strides[d];
    out.push(src[off]);
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < count[d]) break;
      idx[d] = 0;
    }
  }
  return make(t, count, out);
}
