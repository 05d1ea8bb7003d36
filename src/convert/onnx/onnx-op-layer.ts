// The one custom layer of the importer, for ONNX semantics that no built-in tfjs layer expresses:
// element-wise ops with a constant that varies over several axes (or the batch axis), Concat with
// a constant, Div by a non-power-of-two, and pools whose padding is neither VALID nor tfjs' SAME
// (ONNX pads MaxPool with -inf and can exclude pads from AveragePool's count). Graphs of the
// IResNet/MobileFaceNet kind never need it. Registered on import, so saved models that use it load
// in any program that imports this module.
import * as tf from '@tensorflow/tfjs';

export type OnnxOpKind = 'add' | 'sub' | 'rsub' | 'mul' | 'div' | 'rdiv' | 'prelu' | 'concat' | 'maxpool' | 'avgpool';

export interface OnnxOpArgs {
  name?: string;
  op: OnnxOpKind;
  /** Shape of the constant operand in the stored layout, batch axis included (element-wise, concat). */
  constShape?: number[];
  /** Concat: stored axis, and whether the constant comes first. */
  axis?: number;
  constFirst?: boolean;
  /** Pools on NHWC: kernel [kh, kw], strides, dilations, pads [top, left, bottom, right]. */
  kernel?: number[];
  strides?: number[];
  dilations?: number[];
  pads?: number[];
}

type Shape = (number | null)[];

export class OnnxOp extends tf.layers.Layer {
  static className = 'OnnxOp';
  readonly args: OnnxOpArgs;
  private constant: tf.LayerVariable | null = null;

  constructor(args: OnnxOpArgs) {
    super({ name: args.name, trainable: false });
    const { op, constShape, axis, constFirst, kernel, strides, dilations, pads } = args;
    this.args = { op, constShape, axis, constFirst, kernel, strides, dilations, pads };
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    if (this.args.constShape) {
      this.constant = this.addWeight('constant', this.args.constShape, 'float32', tf.initializers.zeros(), undefined, false);
    }
    super.build(inputShape);
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const x = inputShape as Shape;
    const { op, constShape = [], axis = 0 } = this.args;
    if (op === 'maxpool' || op === 'avgpool') {
      const [kh, kw] = this.args.kernel!;
      const [sh, sw] = this.args.strides ?? [1, 1];
      const [dh, dw] = this.args.dilations ?? [1, 1];
      const [t, l, b, r] = this.args.pads ?? [0, 0, 0, 0];
      const out = (n: number | null, k: number, s: number, d: number, p: number): number | null =>
        n === null ? null : Math.floor((n + p - ((k - 1) * d + 1)) / s) + 1;
      return [x[0], out(x[1], kh, sh, dh, t + b), out(x[2], kw, sw, dw, l + r), x[3]];
    }
    if (op === 'concat') {
      const out = [...x];
      out[axis] = x[axis] === null ? null : x[axis]! + constShape[axis];
      return out;
    }
    return x.map((d, i) => (constShape[i] === 1 ? d : constShape[i]));
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = Array.isArray(inputs) ? inputs[0] : inputs;
      const c = this.constant?.read();
      switch (this.args.op) {
        case 'add': return tf.add(x, c!);
        case 'sub': return tf.sub(x, c!);
        case 'rsub': return tf.sub(c!, x);
        case 'mul': return tf.mul(x, c!);
        case 'div': return tf.div(x, c!);
        case 'rdiv': return tf.div(c!, x);
        // x >= 0: x + c*0; x < 0: 0 + c*x. Exact, and broadcasts like the ONNX op.
        case 'prelu': return tf.add(tf.relu(x), tf.mul(c!, tf.minimum(x, 0)));
        case 'concat': {
          const cb = tf.broadcastTo(c!, x.shape.map((d, i) => (i === this.args.axis ? c!.shape[i] : d)));
          return tf.concat(this.args.constFirst ? [cb, x] : [x, cb], this.args.axis);
        }
        case 'maxpool': return this.pool(x as tf.Tensor4D, 'max');
        case 'avgpool': return this.pool(x as tf.Tensor4D, 'avg');
      }
    });
  }

  private pool(x: tf.Tensor4D, kind: 'max' | 'avg'): tf.Tensor {
    const [t, l, b, r] = this.args.pads ?? [0, 0, 0, 0];
    const window = this.args.kernel as [number, number];
    const strides = (this.args.strides ?? [1, 1]) as [number, number];
    const dilations = (this.args.dilations ?? [1, 1]) as [number, number];
    const paddings: [number, number][] = [[0, 0], [t, b], [l, r], [0, 0]];
    if (kind === 'max') {
      return tf.pool(tf.pad(x, paddings, -Infinity), window, 'max', 'valid', dilations, strides);
    }
    // ONNX's default AveragePool divides by the number of non-pad elements in each window.
    const sum = tf.pool(tf.pad(x, paddings, 0), window, 'avg', 'valid', dilations, strides);
    const ones = tf.ones([1, x.shape[1], x.shape[2], 1]);
    const frac = tf.pool(tf.pad(ones, paddings, 0) as tf.Tensor4D, window, 'avg', 'valid', dilations, strides);
    return tf.div(sum, frac);
  }

  override getConfig(): tf.serialization.ConfigDict {
    const cfg: tf.serialization.ConfigDict = { ...super.getConfig() };
    for (const [k, v] of Object.entries(this.args)) if (k !== 'name' && v !== undefined) cfg[k] = v;
    return cfg;
  }
}

tf.serialization.registerClass(OnnxOp);
