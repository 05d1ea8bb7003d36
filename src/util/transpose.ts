// Dense array permutation, shared by the weight-layout code of the .pth mapping and the ONNX writer.

/** Permutes a dense C-order array of `shape` by `perm` (like numpy.transpose). */
export function transposeArray(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]!);
  const inStrides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const stepFor = perm.map((p) => inStrides[p]!);
  const out = new Float32Array(data.length);
  const idx = new Array<number>(rank).fill(0);
  let src = 0;
  for (let i = 0; i < out.length; i++) {
    out[i] = data[src]!;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]!++;
      src += stepFor[d]!;
      if (idx[d]! < outShape[d]!) break;
      src -= stepFor[d]! * outShape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}
