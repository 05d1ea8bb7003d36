// tfjs convolution kernels (forward, dX, dW; dense and depthwise) run by onnxruntime's CPU kernels
// through cached single-op sessions (src/onnx/kernels.ts). They work on any backend whose
// float32 data can be read as a Float32Array without copying: the wasm backend (views of its heap)
// and the cpu backend (its JS arrays). What they cannot run (NCHW data, dilated gradients, other
// dtypes) goes to the base backend's own kernel.
import * as tf from '@tensorflow/tfjs';
import type { KernelBackend, KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs';
import { OrtSession } from '../ort/binding.ts';
import { buildConvGraph, buildMatMulGraph, type ConvOp, type ConvSpec, type MatMulSpec } from '../onnx/kernels.ts';

/** The wasm backend's zero-copy heap access (BackendWasm is not exported as a type). */
interface HeapBackend extends KernelBackend {
  typedArrayFromHeap(t: TensorInfo): Float32Array;
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
}

const isHeap = (b: KernelBackend): b is HeapBackend => typeof (b as Partial<HeapBackend>).typedArrayFromHeap === 'function';

interface CachedGraph {
  session: OrtSession;
  inputs: { name: string; dims: number[] }[];
  output: { name: string; dims: number[] };
}

// Training uses a few dozen distinct geometries; the bound only stops a shape-varying caller from leaking.
const MAX_SESSIONS = 512;
const sessions = new Map<string, CachedGraph>();

function sessionFor(spec: ConvSpec | MatMulSpec): CachedGraph {
  const key = JSON.stringify(spec);
  let s = sessions.get(key);
  if (s) return s;
  const g = spec.op === 'matmul' ? buildMatMulGraph(spec) : buildConvGraph(spec);
  s = { session: new OrtSession(g.model), inputs: g.inputs, output: g.output };
  if (sessions.size >= MAX_SESSIONS) {
    const [oldKey, old] = sessions.entries().next().value as [string, CachedGraph];
    old.session.dispose();
    sessions.delete(oldKey);
  }
  sessions.set(key, s);
  return s;
}

let runs = 0;

/** Cached single-op sessions and kernel runs so far (tests check that ORT, not a fallback, ran). */
export function ortStats(): { sessions: number; runs: number } {
  return { sessions: sessions.size, runs };
}

/** Runs `spec`'s graph on `inputs` (in the graph's input order), writing a new tensor of `backend`. */
function runGraph(backend: KernelBackend, spec: ConvSpec | MatMulSpec, inputs: TensorInfo[]): TensorInfo {
  const g = sessionFor(spec);
  runs++;
  const dims = g.output.dims;
  const size = dims.reduce((a, b) => a * b, 1);
  const feeds = (read: (t: TensorInfo) => Float32Array) =>
    Object.fromEntries(g.inputs.map((inp, i) => [inp.name, { data: read(inputs[i]!), dims: inp.dims }]));
  if (isHeap(backend)) {
    // Allocate first: growing the wasm heap detaches every view taken before.
    const out = backend.makeOutput(dims, 'float32');
    const view = backend.typedArrayFromHeap(out);
    g.session.run(feeds((t) => backend.typedArrayFromHeap(t)), { [g.output.name]: { data: view, dims } });
    return out;
  }
  const values = new Float32Array(size);
  g.session.run(feeds((t) => backend.readSync(t.dataId) as Float32Array), { [g.output.name]: { data: values, dims } });
  // The cpu backend (MathBackendCPU) keeps JS arrays; makeTensorInfo is on the class, not the interface.
  return (backend as KernelBackend & { makeTensorInfo(s: number[], d: 'float32', v: Float32Array): TensorInfo }).makeTensorInfo(dims, 'float32', values);
}

function specFrom(op: ConvOp, info: tf.backend_util.Conv2DInfo, depthwise: boolean): ConvSpec {
  return {
    op,
    depthwise,
    n: info.batchSize,
    h: info.inHeight,
    w: info.inWidth,
    c: info.inChannels,
    oh: info.outHeight,
    ow: info.outWidth,
    o: info.outChannels,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    dh: info.dilationHeight,
    dw: info.dilationWidth,
    top: info.padInfo.top,
    bottom: info.padInfo.bottom,
    left: info.padInfo.left,
    right: info.padInfo.right,
  };
}

type Attrs = {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: string;
  transposeA?: boolean;
  transposeB?: boolean;
  inputShape?: [number, number, number, number];
  filterShape?: [number, number, number, number];
};

const allFloat = (...ts: (TensorInfo | undefined)[]) => ts.every((t) => t != null && t.dtype === 'float32');
const nhwc = (a: Attrs) => (a.dataFormat ?? 'NHWC') === 'NHWC';
const noDilation = (a: Attrs) => {
  const d = a.dilations ?? 1;
  return typeof d === 'number' ? d === 1 : d[0] === 1 && d[1] === 1;
};

/** One ORT-backed kernel: `impl` returns null for cases it leaves to the base backend's kernel. */
type Impl = (inputs: NamedTensorInfoMap, attrs: Attrs, backend: KernelBackend) => TensorInfo | null;

// Below this many multiply-adds a matrix product stays on the base backend (a session run costs ~30 us).
const MIN_MATMUL_MACS = 1 << 20;

const IMPLS: Record<string, Impl> = {
  // The big ones in training: BatchNorm statistics (tfjs computes the mean over N*H*W as a [1,P].[P,C]
  // product), dense-layer and head gradients.
  BatchMatMul: ({ a, b }, attrs, backend) => {
    const rank = a?.shape.length;
    if (!allFloat(a, b) || (rank !== 2 && rank !== 3) || b!.shape.length !== rank) return null;
    const as3 = (s: number[]) => (s.length === 2 ? [1, s[0]!, s[1]!] : s) as [number, number, number];
    const spec: MatMulSpec = { op: 'matmul', a: as3(a!.shape), b: as3(b!.shape), transposeA: !!attrs.transposeA, transposeB: !!attrs.transposeB, rank };
    const k = spec.transposeA ? spec.a[1] : spec.a[2];
    const macs = Math.max(spec.a[0], spec.b[0]) * (spec.a[1] * spec.a[2] / k) * (spec.b[1] * spec.b[2] / k) * k;
    if (macs < MIN_MATMUL_MACS) return null;
    return runGraph(backend, spec, [a!, b!]);
  },
  Conv2D: ({ x, filter }, a, backend) => {
    if (!allFloat(x, filter) || !nhwc(a)) return null;
    const info = tf.backend_util.computeConv2DInfo(x!.shape as never, filter!.shape as never, a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode);
    return runGraph(backend, specFrom('conv', info, false), [x!, filter!]);
  },
  FusedConv2D: ({ x, filter, bias }, a, backend) => {
    if (!allFloat(x, filter) || !nhwc(a) || (a.activation !== 'linear' && a.activation !== 'relu')) return null;
    const o = filter!.shape[3]!;
    if (bias != null && (bias.dtype !== 'float32' || bias.shape.length !== 1 || bias.shape[0] !== o)) return null;
    const info = tf.backend_util.computeConv2DInfo(x!.shape as never, filter!.shape as never, a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode);
    const spec: ConvSpec = { ...specFrom('conv', info, false), bias: bias != null, activation: a.activation };
    return runGraph(backend, spec, bias ? [x!, filter!, bias] : [x!, filter!]);
  },
  DepthwiseConv2dNative: ({ x, filter }, a, backend) => {
    if (!allFloat(x, filter) || !nhwc(a)) return null;
    const info = tf.backend_util.computeConv2DInfo(x!.shape as never, filter!.shape as never, a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode, true);
    return runGraph(backend, specFrom('conv', info, true), [x!, filter!]);
  },
  Conv2DBackpropInput: ({ dy, filter }, a, backend) => {
    if (!allFloat(dy, filter) || !nhwc(a)) return null;
    const info = tf.backend_util.computeConv2DInfo(a.inputShape!, filter!.shape as never, a.strides, 1, a.pad, a.dimRoundingMode);
    return runGraph(backend, specFrom('dx', info, false), [dy!, filter!]);
  },
  Conv2DBackpropFilter: ({ x, dy }, a, backend) => {
    if (!allFloat(x, dy) || !nhwc(a)) return null;
    const info = tf.backend_util.computeConv2DInfo(x!.shape as never, a.filterShape!, a.strides, 1, a.pad, a.dimRoundingMode);
    // im2col + one GEMM over all N*Ho*Wo positions measured 1.1-2.5x faster than ORT's Conv with dy as
    // the filter (whose GEMMs have only kh*kw columns) on IResNet shapes, 16 to 512 channels.
    return runGraph(backend, { ...specFrom('dw', info, false), variant: 'im2col' }, [x!, dy!]);
  },
  DepthwiseConv2dNativeBackpropInput: ({ dy, filter }, a, backend) => {
    if (!allFloat(dy, filter) || !noDilation(a)) return null;
    const info = tf.backend_util.computeConv2DInfo(a.inputShape!, filter!.shape as never, a.strides, 1, a.pad, a.dimRoundingMode, true);
    return runGraph(backend, specFrom('dx', info, true), [dy!, filter!]);
  },
  DepthwiseConv2dNativeBackpropFilter: ({ x, dy }, a, backend) => {
    if (!allFloat(x, dy) || !noDilation(a)) return null;
    const info = tf.backend_util.computeConv2DInfo(x!.shape as never, a.filterShape!, a.strides, 1, a.pad, a.dimRoundingMode, true);
    return runGraph(backend, specFrom('dw', info, true), [x!, dy!]);
  },
};

/** The kernels the ort engine can take over from its base backend. */
export const ORT_CONV_KERNELS: readonly string[] = Object.keys(IMPLS);

/**
 * Kernel configs for `backendName` that run `kernels` through ORT and fall back to `baseBackend`'s
 * kernel of the same name for what ORT does not cover.
 */
export function ortConvKernelConfigs(backendName: string, baseBackend: string, kernels: readonly string[] = ORT_CONV_KERNELS): KernelConfig[] {
  return kernels.map((kernelName) => {
    const impl = IMPLS[kernelName];
    if (!impl) throw new Error(`no ort kernel named ${kernelName}; choose from ${ORT_CONV_KERNELS.join(', ')}`);
    const kernelFunc: KernelFunc = (args) => {
      const r = impl(args.inputs, (args.attrs ?? {}) as NamedAttrMap as unknown as Attrs, args.backend as KernelBackend);
      if (r) return r;
      const base = tf.getKernel(kernelName, baseBackend);
      if (!base) throw new Error(`${kernelName}: case not supported by the ort kernel, and ${baseBackend} has no such kernel`);
      return base.kernelFunc(args);
    };
    return { kernelName, backendName, kernelFunc };
  });
}
