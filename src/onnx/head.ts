// The margin head (Partial FC's forward and backward) as ONNX nodes, so one compiled graph holds a whole
// training step: embedding -> loss -> d(embedding), d(centres). The formulas are the tfjs head's
// (src/losses/partial-fc.ts, margin.ts, cross-entropy.ts), written out with their gradients:
//   En = E / max(|E|, 1e-12), Wn likewise per row; c = clip(En Wn^T, -1, 1);
//   inter-class filtering: c * keep, keep = c <= t or target;
//   ArcFace (reference): z = s (c (1 - Y) + Y cos(acos(c_y) + m2)), dz/dc = s (straight-through);
//   CosFace: z = s (c - m3 Y);
//   loss = mean(-log(max(softmax(z)_y, 1e-30))), dz = (softmax(z) - Y) / n.
// Y is the one-hot label matrix (all zero on a label -1 row), a graph input.
import type { GraphBuilder } from './builder.ts';

export interface MarginHeadSpec {
  batch: number;
  embeddingSize: number;
  /** Rows of centres the graph takes (a symbolic dimension: Partial FC's sample size can vary). */
  classes: string | number;
  s: number;
  path: 'arcface' | 'cosface';
  /** ArcFace's additive angular margin. */
  m2: number;
  /** CosFace's additive cosine margin. */
  m3: number;
  /** Inter-class filtering threshold (0 = off). */
  threshold: number;
}

export interface MarginHeadGraph {
  /** Inputs: the centres [classes, d] and the one-hot labels [batch, classes]. */
  weight: string;
  onehot: string;
  /** Scalar output [1]. */
  loss: string;
  /** Backward-side values: the gradient of the embedding, and of the centres [classes, d]. */
  dEmbedding: string;
  dWeight: string;
}

/** Emits the head on `embedding` [batch, d] into `g`; the input names are reserved here. */
export function emitMarginHead(g: GraphBuilder, embedding: string, spec: MarginHeadSpec): MarginHeadGraph {
  const weight = g.reserve('head.weight');
  const onehot = g.reserve('head.onehot');
  const f = (name: string, v: number) => g.floatInit(name, [1], Float32Array.of(v));
  const axis1 = g.int64Init('head.axis1', [1]);
  const s = f('head.s', spec.s);

  // Row normalisation, keeping 1/r and the mask of max()'s gradient (tfjs: the max's first argument
  // gets the gradient where it is >= the floor).
  const normalise = (x: string, name: string) => {
    const ss = g.node('ReduceSumSquare', [x, axis1], `${name}.ss`, { keepdims: 1 });
    const floor = f(`${name}.floor`, 1e-24);
    const r = g.node('Sqrt', [g.node('Max', [ss, floor], `${name}.ssf`)], `${name}.r`);
    const y = g.node('Div', [x, r], `${name}.n`);
    const mask = g.node('Cast', [g.node('GreaterOrEqual', [ss, floor], `${name}.ge`)], `${name}.mask`, { to: 1 });
    return { y, r, mask };
  };
  const e = normalise(embedding, 'head.e');
  const w = normalise(weight, 'head.w');
  const cos = g.node('Gemm', [e.y, w.y], 'head.cos', { transB: 1 });
  const lo = f('head.lo', -1);
  const hi = f('head.hi', 1);
  const c = g.node('Clip', [cos, lo, hi], 'head.c');
  const inRange = g.node('Cast', [g.node('And', [g.node('GreaterOrEqual', [cos, lo], 'head.ge1'), g.node('LessOrEqual', [cos, hi], 'head.le1')], 'head.in')], 'head.inf', { to: 1 });

  const isTarget = g.node('Greater', [onehot, f('head.half', 0.5)], 'head.ist');
  let x = c;
  let keep: string | null = null;
  if (spec.threshold > 0) {
    keep = g.node('Cast', [g.node('Or', [g.node('LessOrEqual', [c, f('head.t', spec.threshold)], 'head.le'), isTarget], 'head.keepb')], 'head.keep', { to: 1 });
    x = g.node('Mul', [c, keep], 'head.cf');
  }
  let z: string;
  if (spec.path === 'cosface') {
    z = g.node('Mul', [g.node('Sub', [x, g.node('Mul', [onehot, f('head.m3', spec.m3)], 'head.ym')], 'head.cm'), s], 'head.z');
  } else {
    const target = g.node('ReduceSum', [g.node('Mul', [x, onehot], 'head.cy'), axis1], 'head.target', { keepdims: 1 });
    const withMargin = g.node('Cos', [g.node('Add', [g.node('Acos', [target], 'head.theta'), f('head.m2', spec.m2)], 'head.thm')], 'head.phi');
    const notTarget = g.node('Sub', [f('head.one', 1), onehot], 'head.nt');
    const mixed = g.node('Add', [g.node('Mul', [x, notTarget], 'head.cn'), g.node('Mul', [onehot, withMargin], 'head.yphi')], 'head.mix');
    z = g.node('Mul', [mixed, s], 'head.z');
  }
  // Softmax over classes with the row max subtracted (ONNX Softmax does that), then the clamped NLL.
  const p = g.node('Softmax', [z], 'head.p', { axis: 1 });
  const pTarget = g.node('ReduceSum', [g.node('Mul', [p, onehot], 'head.py'), axis1], 'head.pt', { keepdims: 0 });
  const nll = g.node('Neg', [g.node('Log', [g.node('Max', [pTarget, f('head.pfloor', 1e-30)], 'head.ptf')], 'head.lp')], 'head.nll');
  const loss = g.node('ReduceMean', [nll], 'head.loss', { keepdims: 1 });

  // Backward: dz = (p - Y) / n, dc = s dz (both margins), times the filter and the clamp's masks.
  let dc = g.node('Mul', [g.node('Sub', [p, onehot], 'head.pmy'), f('head.s_over_n', spec.s / spec.batch)], 'head.dc');
  if (keep) dc = g.node('Mul', [dc, keep], 'head.dcf');
  dc = g.node('Mul', [dc, inRange], 'head.dcos');
  const dEn = g.node('MatMul', [dc, w.y], 'head.den');
  const dWn = g.node('Gemm', [dc, e.y], 'head.dwn', { transA: 1 });
  // Through y = x / r: dx = (dy - y mask sum(dy y)) / r.
  const unnormalise = (dy: string, n: { y: string; r: string; mask: string }, name: string) => {
    const dot = g.node('ReduceSum', [g.node('Mul', [dy, n.y], `${name}.dyy`), axis1], `${name}.dot`, { keepdims: 1 });
    const proj = g.node('Mul', [n.y, g.node('Mul', [dot, n.mask], `${name}.dotm`)], `${name}.proj`);
    return g.node('Div', [g.node('Sub', [dy, proj], `${name}.dyp`), n.r], `${name}.dx`);
  };
  return { weight, onehot, loss, dEmbedding: unnormalise(dEn, e, 'head.de'), dWeight: unnormalise(dWn, w, 'head.dw') };
}
