// A tiny WebAssembly SIMD module, assembled here byte by byte (no toolchain needed), for the per-pixel work
// of the loader's hot path, which plain JS does at ~2 ns per value:
//   norm(src, dst, n): dst[i] = f32((f32(src[i] / 255) - 0.5) / 0.5) for n bytes (n a multiple of 16)
//   flip(src, dst, w, h): mirrors an interleaved RGB image left-right
// f32x4.div/sub are IEEE single-precision operations, the same ones torchvision's float32 math does, so the
// result is bit-identical to the JS table (normalise.ts checks this at load and falls back if not).

const u32 = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const str = (s: string): number[] => [...u32(s.length), ...Buffer.from(s, 'latin1')];
const section = (id: number, body: number[]): number[] => [id, ...u32(body.length), ...body];
const vec = (items: number[][]): number[] => [...u32(items.length), ...items.flat()];
const f32 = (x: number): number[] => [...new Uint8Array(new Float32Array([x]).buffer)];

// Opcodes used
const LOCAL_GET = 0x20, LOCAL_SET = 0x21, I32_CONST = 0x41, F32_CONST = 0x43;
const I32_ADD = 0x6a, I32_SUB = 0x6b, I32_MUL = 0x6c, I32_SHL = 0x74, I32_GE_U = 0x4f;
const BLOCK = 0x02, LOOP = 0x03, BR = 0x0c, BR_IF = 0x0d, END = 0x0b, VOID = 0x40;
const I32_LOAD8_U = 0x2d, I32_STORE8 = 0x3a;
const simd = (op: number): number[] => [0xfd, ...u32(op)];
const V128_LOAD = simd(0x00), V128_STORE = simd(0x0b), F32X4_SPLAT = simd(0x13);
const I16X8_EXT_LOW_U8 = simd(0x89), I16X8_EXT_HIGH_U8 = simd(0x8a);
const I32X4_EXT_LOW_U16 = simd(0xa9), I32X4_EXT_HIGH_U16 = simd(0xaa);
const F32X4_SUB = simd(0xe5), F32X4_DIV = simd(0xe7), F32X4_CONVERT_U = simd(0xfb);
const I32 = 0x7f, V128 = 0x7b;

const get = (i: number): number[] => [LOCAL_GET, i];
const set = (i: number): number[] => [LOCAL_SET, i];
const mem = (offset: number): number[] => [0, ...u32(offset)]; // align hint 1 byte, offset

function normBody(): number[] {
  // params: 0 src, 1 dst, 2 n; locals: 3 i, 4 o, 5 v, 6 w, 7 k255, 8 half
  const norm = [...F32X4_CONVERT_U, ...get(7), ...F32X4_DIV, ...get(8), ...F32X4_SUB, ...get(8), ...F32X4_DIV];
  const quarter = (widen: number[], offset: number): number[] => [...get(4), ...get(6), ...widen, ...norm, ...V128_STORE, ...mem(offset)];
  const code = [
    ...[F32_CONST, ...f32(255)], ...F32X4_SPLAT, ...set(7),
    ...[F32_CONST, ...f32(0.5)], ...F32X4_SPLAT, ...set(8),
    BLOCK, VOID, LOOP, VOID,
    ...get(3), ...get(2), I32_GE_U, BR_IF, 1,
    ...get(1), ...get(3), I32_CONST, 2, I32_SHL, I32_ADD, ...set(4),
    ...get(0), ...get(3), I32_ADD, ...V128_LOAD, ...mem(0), ...set(5),
    ...get(5), ...I16X8_EXT_LOW_U8, ...set(6),
    ...quarter(I32X4_EXT_LOW_U16, 0), ...quarter(I32X4_EXT_HIGH_U16, 16),
    ...get(5), ...I16X8_EXT_HIGH_U8, ...set(6),
    ...quarter(I32X4_EXT_LOW_U16, 32), ...quarter(I32X4_EXT_HIGH_U16, 48),
    ...get(3), I32_CONST, 16, I32_ADD, ...set(3),
    BR, 0, END, END, END,
  ];
  return [...vec([[2, I32], [4, V128]]), ...code];
}

function flipBody(): number[] {
  // params: 0 src, 1 dst, 2 w, 3 h; locals: 4 s, 5 d, 6 rowEnd, 7 rowBytes, 8 end
  const copy = (k: number): number[] => [...get(5), ...get(4), I32_LOAD8_U, ...mem(k), I32_STORE8, ...mem(k)];
  const code = [
    ...get(2), I32_CONST, 3, I32_MUL, ...set(7),
    ...get(1), ...set(5),
    ...get(1), ...get(7), ...get(3), I32_MUL, I32_ADD, ...set(8),
    ...get(0), ...get(7), I32_ADD, I32_CONST, 3, I32_SUB, ...set(4),
    BLOCK, VOID, LOOP, VOID,
    ...get(5), ...get(8), I32_GE_U, BR_IF, 1,
    ...get(5), ...get(7), I32_ADD, ...set(6),
    BLOCK, VOID, LOOP, VOID,
    ...get(5), ...get(6), I32_GE_U, BR_IF, 1,
    ...copy(0), ...copy(1), ...copy(2),
    ...get(5), I32_CONST, 3, I32_ADD, ...set(5),
    ...get(4), I32_CONST, 3, I32_SUB, ...set(4),
    BR, 0, END, END,
    ...get(4), ...get(7), I32_CONST, 1, I32_SHL, I32_ADD, ...set(4),
    BR, 0, END, END, END,
  ];
  return [...vec([[5, I32]]), ...code];
}

/** The module's bytes: exports memory, norm(src, dst, n), flip(src, dst, w, h). */
export function simdKernelBytes(): Uint8Array<ArrayBuffer> {
  const body = (b: number[]): number[] => [...u32(b.length), ...b];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, 3, I32, I32, I32, 0], [0x60, 4, I32, I32, I32, I32, 0]])),
    ...section(3, vec([[0], [1]])),
    ...section(5, vec([[0x00, 4]])), // one memory, at least 4 pages (256 KiB), growable
    ...section(7, vec([[...str('norm'), 0x00, 0], [...str('flip'), 0x00, 1], [...str('memory'), 0x02, 0]])),
    ...section(10, vec([body(normBody()), body(flipBody())])),
  ];
  return new Uint8Array(bytes);
}

export interface SimdKernel {
  memory: WebAssembly.Memory;
  norm(src: number, dst: number, n: number): void;
  flip(src: number, dst: number, w: number, h: number): void;
}

/** Instantiates the kernel, or returns null where WebAssembly SIMD is unavailable. */
export function loadSimdKernel(): SimdKernel | null {
  try {
    const inst = new WebAssembly.Instance(new WebAssembly.Module(simdKernelBytes()), {});
    return inst.exports as unknown as SimdKernel;
  } catch {
    return null;
  }
}
